"""Settings shared by the continuum analyses: the couplings, the fit (order, SVD cut) and the Bayesian fit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from corrflow.pipeline import AnalysisSettings, setting

__all__ = ["ContinuumFitSettings", "ORDER_TEXT", "goodness_of_fit"]

ORDER_TEXT = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}


def goodness_of_fit(chi2: float, dof: int, p_value: float | None = None) -> str:
    """``"chi2/dof = 1.23/2, p = 0.54"``; for a fit with as many parameters as couplings, a sentence saying that it
    interpolates (its chi^2 is zero by construction and tests nothing) instead of ``0.00/0, p = nan``."""
    if dof <= 0:
        return ("no degrees of freedom (as many fit parameters as couplings: the polynomial interpolates, so nothing "
                "tests the fit model; add a coupling or lower --order for a chi^2 test)")
    return f"chi2/dof = {chi2:.2f}/{dof}" + ("" if p_value is None else f", p = {p_value:.2f}")


@dataclass(frozen=True)
class ContinuumFitSettings(AnalysisSettings):
    """Couplings (sorted on construction; the smallest is the base of the flows) and fit settings; each continuum
    analysis redeclares the fields whose defaults differ."""

    betas: tuple[float, ...] = setting((6.0, 6.1), "comma-separated betas; the smallest is the base of the flows")
    order: int = setting(1, "polynomial degree of the continuum fit")
    svd_cut: float = setting(0.0, "SVD cut of the correlation matrix in the fits (0: none; raise on an "
                                  "ill-conditioned covariance)")
    bayes: bool = setting(False, "also run the Bayesian (numpyro NUTS) fits")
    bayes_warmup: int = setting(500, "NUTS warm-up steps")
    bayes_samples: int = setting(1000, "NUTS samples")
    bayes_seed: int = setting(0, "PRNG seed of the NUTS runs")
    prior_scale: float = setting(10.0, "prior width of c_j in units of max|q| / max|x^j|")

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(sorted(float(b) for b in self.betas)))
        super().__post_init__()

    def check(self) -> None:
        betas = self.betas
        if len(betas) < 2:
            raise ValueError(f"need at least 2 betas (the base and one target), got {self.betas}")
        if len(set(betas)) != len(betas):
            raise ValueError(f"betas must be distinct, got {self.betas}")
        if any(not (b > 0 and math.isfinite(b)) for b in betas):
            raise ValueError(f"betas must be positive and finite, got {self.betas}")
        if self.ensemble.n_configs < 20:
            raise ValueError(f"n_configs must be >= 20 per chain for a binned error analysis, got "
                             f"{self.ensemble.n_configs}")
        if self.bayes_samples < 1 or self.bayes_warmup < 0:
            raise ValueError("bayes_samples must be >= 1 and bayes_warmup >= 0")
        if self.order < 0:
            raise ValueError(f"order must be >= 0 (the polynomial degree in a^2), got {self.order}")
        if self.order + 1 > len(betas):
            raise ValueError(f"order {self.order} needs at least {self.order + 1} betas, got {len(betas)}")
        if not (self.prior_scale > 0 and math.isfinite(self.prior_scale)):
            raise ValueError(f"prior_scale must be a finite width > 0, got {self.prior_scale}")
        if self.svd_cut and not (0 < self.svd_cut < 1):
            raise ValueError(f"svd_cut must lie in (0, 1) (or 0 for none), got {self.svd_cut}")

    @property
    def base_beta(self) -> float:
        return self.betas[0]
