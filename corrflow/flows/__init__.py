"""Gauge-equivariant flows between action parameters: masked residual layers (:mod:`corrflow.flows.layers`) with
held-out smoothing terms (:mod:`corrflow.flows.smoothing`) and exact plaquette-space maps for 2D U(1)
(:mod:`corrflow.flows.plaquette`)."""

from typing import TYPE_CHECKING

from .._lazy_names import install

# {submodule: names}, loaded on first use (PEP 562): importing the package loads neither JAX nor scipy
_NAMES = {
    "build": ("FLOW_KINDS", "default_kind", "default_smoothing", "flow_from_description", "make_flow"),
    "layers": ("INVERSE_TOL", "Flow", "ResidualLayer"),
    "plaquette": ("PlaquetteFlow",),
    "spec": ("LOOPS",),
    "staples": ("layer_masks", "loop_paths", "n_staples", "path_product", "staple_sums"),
}
install(__name__, _NAMES)

if TYPE_CHECKING:  # the names for type checkers and editors
    from .build import FLOW_KINDS, default_kind, default_smoothing, flow_from_description, make_flow
    from .layers import INVERSE_TOL, Flow, ResidualLayer
    from .plaquette import PlaquetteFlow
    from .spec import LOOPS
    from .staples import layer_masks, loop_paths, n_staples, path_product, staple_sums

__all__ = ["Flow", "ResidualLayer", "PlaquetteFlow", "make_flow", "default_kind", "default_smoothing",
           "flow_from_description", "FLOW_KINDS", "INVERSE_TOL", "LOOPS", "layer_masks", "loop_paths", "n_staples", "path_product", "staple_sums"]
