"""Tangent-flow (linearised-flow) derivative estimators: unbiased ``d<O>/dα`` without weights (issue 15).

For ``p_α ∝ e^{-S_α}`` and any smooth vector field ``v`` on the link manifold (docs/physics.md section 7)::

    R_v = ∂_α S + v·∇S − ∇·v,    T_v = v·∇O − (O − <O>)(R_v − <R_v>),    E[T_v] = d<O>/dα  for every v;

``v = 0`` is the connected estimator.  The field is fitted by minimising ``Var[R_v]`` (least squares for fields
linear in their coefficients, cross-fitted so that no configuration enters its own coefficients), or, per observable,
``Var[T_v]`` itself (``target="observable"``: the ``v_k`` terms as control variates of the connected estimator).

* :mod:`.core` -- right-trivialised gradients, ``v·∇O`` by ``jax.jvp``, ``∇·v`` dense or by Hutchinson probes,
  ``∂_α S``, smooth observables by name;
* :mod:`.fermions` -- Wilson fermions: ``∂_m S_eff`` and the fermion part of ``v·∇S`` by exact or stochastic traces
  of ``D^{-1}``, fermionic observables (``condensate``, ``pion@T``) with their explicit mass dependence;
* :mod:`.fields` -- :class:`PlaquetteField` (2D U(1), exact non-local field), :class:`GradientField` (any group and
  dimension: gradients of plaquette / rectangle / Wilson-flowed plaquette actions);
* :mod:`.precondition` -- :class:`PreconditionedField` (any theory: gradient fields times the inverse covariant
  Laplacian, non-local; in 2D U(1) the plaquette-space field);
* :mod:`.fit` -- ridge least squares with held-out selection, cross-fitting;
* :mod:`.estimator` -- the estimator with Gamma-method errors, and its second-order control variate (the identity
  again with ``h = R_v``: :func:`second_order_estimate`);
* :mod:`.terms` -- the per-configuration terms in jitted batches: all basis fields at once (:func:`compute_terms`),
  or in two passes, the field's terms for the fit and then ``v·∇O`` along the fitted field alone (:func:`field_terms`,
  :func:`contracted_derivatives`: one solve instead of one per basis field for pion correlators);
* :mod:`.passes` -- the two passes with the fit between them (:func:`two_pass`), for every caller: in memory, or
  with each pass's outputs kept where the caller resumes them (``corrflow derivative``, the analyses);
* :mod:`.derivative` -- configurations -> terms -> fit -> estimates (:func:`derivative`);
* :mod:`.spectroscopy` -- ``d m_eff/dα`` of the pion from ``pion@t`` pairs;
* :mod:`.scales` -- ``d(t0/a^2)/dα`` from ``t2E@T`` estimates on a grid of flow times.

Example::

    from corrflow import tangent
    res = tangent.derivative(theory, configs, "beta", ["plaquette", "wilson_2x2"],
                             tangent.make_field("auto", theory), jax.random.PRNGKey(0))
    res.estimates["wilson_2x2"]["tangent"], res.reduction["wilson_2x2"]
"""

from .core import (
    CHARGE_OBSERVABLES,
    OBSERVABLES,
    PARAMETERS,
    charge_observables,
    check_charge_observables,
    check_parameter,
    coords_shape,
    directional_derivative,
    directional_derivatives,
    divergence_dense,
    divergence_hutchinson,
    gradient,
    hutchinson_probes,
    lift,
    observable_function,
    observables_vector,
    parameter_derivative,
    probe_classes,
    value_and_directional_derivative,
)
from .derivative import (FIT_TARGETS, DerivativeResult, apply_fits, contracted_terms, control_variates, derivative,
                         estimate, fit_coefficients, observable_cross_fit)
from .estimator import (connected_estimate, paired_difference, regression_slopes, second_order_difference,
                        second_order_estimate, tangent_estimate, tangent_values, variance_reduction)
from .fermions import (
    FERMION_OBSERVABLES,
    NOISE_KINDS,
    DILUTIONS,
    TRACE_METHODS,
    FermionTraces,
    fermion_derivatives,
    is_fermion_theory,
)
from .fields import (FEATURE_HELP, FIELD_KINDS, GradientField, NoField, PlaquetteField, default_features, make_field,
                     plaquette_link_field)
from .precondition import PreconditionedField
from .smoothing import SmoothingField
from .fit import (FieldFit, TangentFitWarning, check_cross_fit_size, check_field_size, cross_fit,
                  cross_fit_shortfall, fit_field,
                  fold_coefficients, fold_index)
from .scales import flow_scale_derivative
from .spectroscopy import cosh_effective_mass, effective_mass_derivative
from .passes import PASS_OUTPUTS, TwoPass, in_memory, two_pass
from .terms import (CONTRACTED_TERMS, FIELD_TERMS, FLAT_TERMS, SECOND_ORDER_TERMS, TangentTerms, check_second_order,
                    compute_terms, contracted_derivatives, use_contraction,
                    contraction_pays, costly_observables, describe_traces, field_terms, observables_cost,
                    valence_theory)

__all__ = [
    "OBSERVABLES", "PARAMETERS", "CHARGE_OBSERVABLES", "charge_observables", "check_charge_observables",
    "check_parameter", "observables_vector", "coords_shape", "directional_derivative",
    "directional_derivatives", "divergence_dense",
    "divergence_hutchinson", "gradient", "hutchinson_probes", "lift", "observable_function", "parameter_derivative",
    "probe_classes", "SmoothingField", "PreconditionedField",
    "DerivativeResult", "TangentTerms", "apply_fits", "compute_terms", "derivative", "estimate", "FIT_TARGETS", "FLAT_TERMS",
    "control_variates", "observable_cross_fit", "fit_coefficients", "observables_cost",
    "valence_theory", "FIELD_TERMS", "CONTRACTED_TERMS", "field_terms", "contracted_derivatives", "contracted_terms",
    "contraction_pays", "costly_observables", "describe_traces", "fold_coefficients",
    "value_and_directional_derivative",
    "connected_estimate", "paired_difference", "tangent_estimate", "tangent_values", "variance_reduction",
    "second_order_estimate", "second_order_difference", "regression_slopes", "check_second_order",
    "SECOND_ORDER_TERMS", "use_contraction", "TwoPass", "two_pass", "in_memory", "PASS_OUTPUTS",
    "FEATURE_HELP", "FIELD_KINDS", "default_features", "GradientField", "NoField", "PlaquetteField", "make_field", "plaquette_link_field",
    "FERMION_OBSERVABLES", "NOISE_KINDS", "DILUTIONS", "TRACE_METHODS", "FermionTraces", "fermion_derivatives",
    "is_fermion_theory",
    "FieldFit", "TangentFitWarning", "cross_fit", "check_cross_fit_size", "cross_fit_shortfall", "check_field_size",
    "fit_field", "fold_index",
    "flow_scale_derivative",
    "cosh_effective_mass", "effective_mass_derivative",
]
