"""One settings model for every analysis: small frozen dataclasses composed per analysis.

Groups (each validates its own fields on construction, with one-line ``ValueError`` messages):

* :class:`StoreSettings` -- where: the zarr store, the output directory, the flow directory;
* :class:`EnsembleSettings` -- how many configurations: per chain, chains, thermalisation, thinning, seed, start;
* :class:`MarkovSettings` -- the update: HMC (step size, steps, integrator, fermion algorithm) or heat bath;
* :class:`FlowSettings` -- the flow architecture (sweeps, loop shapes, coefficient degree);
* :class:`TrainingSettings` -- its training (epochs, configurations, batch, learning rate, optimiser, sample);
* :class:`ErrorSettings` -- the error analysis (Gamma method or binned jackknife, bin size).

An analysis's settings (a subclass of :class:`AnalysisSettings`) holds these groups -- with its own defaults --
beside its own fields, and checks cross-field constraints in :meth:`AnalysisSettings.check`.  Every field is a
plain value (str, int, float, bool or a tuple of them; "auto" is spelled ``0`` or ``""``, never ``None``), so
that settings round-trip through JSON records and TOML run files:

    s = ContinuumSettings.make(n_configs=200, betas=(9, 10))     # flat names are routed to their group
    s = s.replace(epochs=5)
    d = s.to_dict()                                               # nested, JSON/TOML-ready
    ContinuumSettings.from_dict(d) == s
    ContinuumSettings.from_toml("run.toml")                       # nested tables or flat keys

Field metadata (:func:`setting`) carries the help text and, optionally, the command-line flag and the allowed
choices; :mod:`corrflow.pipeline.cli` turns any settings class into a typer command from it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from .model import Settings, coerce, non_negative_ints, positive_ints, setting

__all__ = [
    "AnalysisSettings",
    "EnsembleSettings",
    "ErrorSettings",
    "FlowSettings",
    "MarkovSettings",
    "Settings",
    "StoreSettings",
    "TrainingSettings",
    "setting",
]


@dataclass(frozen=True)
class StoreSettings(Settings):
    """Where a run keeps its data: the store, the output directory and the flow directory."""

    store: str = setting("data/run.zarr", "zarr store (created if absent; every step is resumable)")
    out: str = setting("reports/run", "output directory for the figure, Markdown, JSON record and run file")
    flow_dir: str = setting("", "flow checkpoints, cost ledger and caches [empty: STORE-stem_flows next to the "
                                "store]")

    def check(self) -> None:
        if not self.store:
            raise ValueError("store must be a path or URL")
        if "://" not in self.store:
            store = Path(os.path.abspath(self.store))
            for name in ("out", "flow_dir"):
                p = Path(os.path.abspath(getattr(self, name))) if getattr(self, name) else None
                if p is not None and (p == store or store in p.parents):
                    raise ValueError(f"{name} {getattr(self, name)} is inside the store {self.store}; give a "
                                     "directory of its own (the store's directory holds the store only)")

    def resolved_flow_dir(self) -> Path:
        """``flow_dir``, or ``<store without .zarr>_flows`` next to the store."""
        if self.flow_dir:
            return Path(self.flow_dir)
        p = Path(self.store)
        return p.with_name(p.name.removesuffix(".zarr") + "_flows")


@dataclass(frozen=True)
class EnsembleSettings(Settings):
    """Size and recipe of every Markov-chain ensemble of a run (base, independent, training chain)."""

    n_configs: int = setting(1000, "stored configurations per chain and ensemble", aliases=("--n",))
    n_chains: int = setting(2, "chains per ensemble (run in parallel, vmapped)", flag="--chains")
    n_therm: int = setting(100, "thermalisation trajectories (or heat-bath updates)", flag="--therm")
    thin: int = setting(1, "trajectories (updates) per stored configuration")
    seed: int = setting(0, "seed of the base ensemble (independent ensembles: seed + 1, seed + 2, ...)")
    start: str = setting("hot", "initial links of the chains: hot (Haar random) | cold (unit)", choices=("hot", "cold"))
    block_size: int = setting(0, "trajectories per jitted block and store chunk [0: automatic]", aliases=("--block",))

    def check(self) -> None:
        positive_ints(self, "n_configs", "n_chains", "thin")
        non_negative_ints(self, "n_therm", "block_size")
        if self.n_configs < 10:
            raise ValueError(f"n_configs must be >= 10 per chain (error analysis), got {self.n_configs}")


@dataclass(frozen=True)
class MarkovSettings(Settings):
    """The Markov-chain update: HMC (Omelyan or leapfrog; for fermions exact determinant or pseudofermions) or,
    for pure SU(N), heat bath + over-relaxation."""

    algorithm: str = setting("hmc", "update algorithm: hmc | heatbath (pure SU(N) gauge theories)",
                             choices=("hmc", "heatbath"))
    step_size: float = setting(0.2, "MD step size")
    n_steps: int = setting(5, "MD steps per trajectory")
    integrator: str = setting("omelyan", "MD integrator: omelyan | leapfrog", choices=("omelyan", "leapfrog"))
    jitter: str = setting("auto", "randomised trajectory lengths: each trajectory's step size drawn from step_size "
                                  "x [1 - J, 1 + J]; J in [0, 1) (0: fixed), or auto: 0.2 for a new ensemble, the "
                                  "stored value when continuing one")
    step_scaling: str = setting("fixed", "step size at beta: fixed | inverse_sqrt_beta (step_size / sqrt(beta))",
                                choices=("fixed", "inverse_sqrt_beta"))
    hmc_det: str = setting("exact", "fermion algorithm of the HMC: exact | pseudofermion (weights always use exact "
                                    "determinants)", choices=("exact", "pseudofermion"), aliases=("--fermion-det",))
    n_overrelax: int = setting(4, "over-relaxation sweeps per heat-bath update", aliases=("--overrelax",))

    def check(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be positive, got {self.step_size}")
        positive_ints(self, "n_steps")
        non_negative_ints(self, "n_overrelax")
        self.jitter_value()  # ValueError for anything but auto or a number in [0, 1)

    def jitter_value(self) -> float | None:
        """``jitter`` as :class:`corrflow.HMCConfig` takes it: None for ``auto`` (resolved from the store)."""
        text = str(self.jitter).strip().lower()
        if text == "auto":
            return None
        try:
            j = float(text)
        except ValueError:
            j = math.nan
        if not (math.isfinite(j) and 0.0 <= j < 1.0):
            raise ValueError(f"jitter must be auto or a number in [0, 1) (relative spread of the step size), got "
                             f"{self.jitter!r}")
        return j

    def config(self, beta: float | None = None) -> Any:
        """:class:`corrflow.HMCConfig` (step size scaled with ``beta`` if asked) or
        :class:`corrflow.heatbath.HeatbathConfig`."""
        if self.algorithm == "heatbath":
            from ..heatbath import HeatbathConfig

            return HeatbathConfig(n_heatbath=1, n_overrelax=int(self.n_overrelax))
        from ..hmc import HMCConfig

        eps = self.step_size
        if self.step_scaling == "inverse_sqrt_beta":
            if beta is None:
                raise ValueError("step_scaling inverse_sqrt_beta needs the beta of the ensemble")
            eps = self.step_size / math.sqrt(beta)
        return HMCConfig(step_size=eps, n_steps=self.n_steps, integrator=self.integrator, jitter=self.jitter_value())


@dataclass(frozen=True)
class FlowSettings(Settings):
    """Architecture of the flows (:func:`corrflow.flows.make_flow`).

    ``flow_kind``: ``residual`` (masked gauge-equivariant residual layers; ``loops``, ``degree``, ``net_width``,
    ``net_depth``, ``smear``), ``plaquette`` (2D U(1): exact plaquette-space maps with ``harmonics`` coefficients) or
    ``auto`` (the default: plaquette for 2D U(1) -- the Schwinger model's gauge field too --, residual otherwise;
    BENCHMARKS.md "Plaquette-space flows in the 2D analyses").  ``sweeps = 0``: 2 residual sweeps, 1 plaquette map.
    Options of the other kind than the one in use are refused, not ignored."""

    flow_kind: str = setting("auto", "flow kind: residual | plaquette (2D U(1)) | auto (plaquette in 2D U(1), residual "
                                     "otherwise)", choices=("residual", "plaquette", "auto"))
    sweeps: int = setting(0, "flow sweeps over all links (plaquette flows: maps) [0: 2 residual, 1 residual with "
                             "smoothing terms, 1 plaquette]")
    loops: tuple[str, ...] = setting(("plaquette",), "flow staple shapes: plaquette[,rectangle] (residual)")
    degree: int = setting(0, "degree of the flow coefficients' polynomials in the staple norm (0: constants; residual)")
    harmonics: int = setting(6, "sine harmonics of each plaquette map (plaquette flows)")
    net_width: int = setting(0, "channels of the CNN that computes the coefficients (0: no network; residual)")
    net_depth: int = setting(2, "convolutions of that CNN")
    smear: int = setting(0, "stout-smearing steps of the transverse links in extra staples (d >= 3; residual)")
    smoothing: tuple[float, ...] = setting((), "Wilson-flow times of held-out smoothing terms, e.g. 0.1,0.2,0.4,0.8 "
                                               "(SU(2)/SU(3); residual)")

    def check(self) -> None:
        from ..flows.spec import LOOPS, check_degree, check_times

        non_negative_ints(self, "sweeps", "net_width", "smear")
        positive_ints(self, "harmonics", "net_depth")
        if not self.loops:
            raise ValueError(f"loops must name at least one staple shape ({', '.join(LOOPS)})")
        bad = [x for x in self.loops if x not in LOOPS]
        if bad:
            raise ValueError(f"unknown flow loop shape(s) {', '.join(bad)}; allowed: {', '.join(LOOPS)}")
        check_degree(self.degree)
        if self.smoothing:
            check_times(self.smoothing, 0.05)

    def resolved_kind(self, group: Any, shape: Any) -> str:
        """``kind`` with ``auto`` resolved for a group (name or object) and lattice shape."""
        from ..flows import default_kind

        return default_kind(group, shape) if self.flow_kind == "auto" else self.flow_kind

    def describe(self, group: Any, shape: Any) -> str:
        """One line for summaries: ``"plaquette-space flow, 1 map of 6 harmonics"`` / ``"residual flow, 2 sweeps of
        plaquette layers"``."""
        if self.resolved_kind(group, shape) == "plaquette":
            n = self.sweeps or 1
            return f"plaquette-space flow, {n} map{'s' if n > 1 else ''} of {self.harmonics} harmonics"
        coeff = (f", CNN coefficients ({self.net_depth} x {self.net_width} channels)" if self.net_width else
                 f", degree-{self.degree} coefficients" if self.degree else "")
        smear = f", {self.smear} smearing steps" if self.smear else ""
        smooth = f", smoothing at t = {'/'.join(f'{t:g}' for t in self.smoothing)}" if self.smoothing else ""
        n = self.sweeps or (1 if self.smoothing else 2)
        return f"residual flow, {n} sweep{'s' if n > 1 else ''} of {'+'.join(self.loops)} layers{coeff}{smear}{smooth}"

    def _foreign_options(self, kind: str) -> list[str]:
        """The options set away from their defaults that belong to the other flow kind than ``kind``."""
        residual_only = ("loops", "degree", "net_width", "net_depth", "smear", "smoothing")
        names = residual_only if kind == "plaquette" else ("harmonics",)
        return [n for n in names if getattr(self, n) != type(self).class_default(n)]

    def make(self, theory: Any) -> Any:
        """The (untrained) flow for ``theory``'s group and lattice (``ValueError`` for options that do not fit)."""
        return self.build(theory.group, theory.shape)

    def check_lattice(self, group: Any, shape: Any) -> None:
        """One-line ``ValueError`` if this architecture does not fit ``group`` (name or object) on ``shape`` -- e.g.
        plaquette layers on an odd extent.  The analyses call it in their settings check, so that such a lattice is
        refused before anything is generated (the flows are built only after the base ensemble)."""
        try:
            self.build(group, shape)
        except ValueError as exc:
            raise ValueError(f"the flows do not fit the {'x'.join(map(str, shape))} lattice: {exc}") from None

    def build(self, group: Any, shape: Any) -> Any:
        """The (untrained) flow for ``group`` (name or object) on ``shape`` (``ValueError`` for options that do not
        fit)."""
        from ..flows import make_flow

        kind = self.resolved_kind(group, shape)
        foreign = self._foreign_options(kind)
        if foreign:
            other = "residual" if kind == "plaquette" else "plaquette"
            raise ValueError(f"{', '.join(foreign)} appl{'ies' if len(foreign) == 1 else 'y'} to {other} flows, but "
                             f"the flows here are {kind} flows (flow_kind {self.flow_kind}): leave "
                             f"{'it' if len(foreign) == 1 else 'them'} out, or set flow_kind {other}")
        if kind == "plaquette":
            return make_flow(group, shape, kind="plaquette", n_sweeps=self.sweeps or 1, harmonics=self.harmonics)
        return make_flow(group, shape, loops=tuple(self.loops),
                         n_sweeps=self.sweeps or (1 if self.smoothing else 2),
                         degree=self.degree, net_width=self.net_width, net_depth=self.net_depth, smear=self.smear,
                         smoothing=tuple(self.smoothing))


@dataclass(frozen=True)
class TrainingSettings(Settings):
    """Training of the flows (reverse KL on base configurations, :func:`corrflow.flows.train.train`)."""

    epochs: int = setting(10, "flow training epochs (L-BFGS: maximum iterations)")
    n_train: int = setting(256, "training configurations (spread over the chains)")
    batch_size: int = setting(64, "training batch size (L-BFGS: micro-batch)")
    learning_rate: float = setting(0.02, "initial learning rate of Adam (cosine decay)", flag="--lr")
    optimizer: str = setting("auto", "adam | lbfgs | linear | auto (linear -- Gauss-Newton on var log w -- for "
                                     "residual flows; L-BFGS for plaquette-space flows and network coefficients in "
                                     "4D, Adam for those in 2D)", choices=("auto", "adam", "lbfgs", "linear"))
    train_seed: int = setting(0, "seed of the training shuffles")
    held_out: int = setting(64, "configurations held out of training (between the training ones; with a separate "
                                 "training chain, its extra configurations): held-out ESS and var(log w) every epoch, "
                                 "the epoch with the smallest held-out var(log w) kept -- the identity (epoch 0) "
                                 "when training only fits noise [0: the last epoch]")
    patience: int = setting(0, "with held-out configurations: stop after this many epochs without improvement (0: "
                               "never)")
    sample: str = setting("base", "training configurations: base (spread over the base ensemble) | separate (a "
                                  "separate chain at the base parameters, seed + 1000, so that the flows are fixed "
                                  "with respect to the estimation sample)", flag="--train-sample",
                          choices=("base", "separate"))
    stream: str = setting("auto", "training configurations in memory (no) or read from the store one batch at a time "
                                  "(yes); auto: streamed above 1 GiB. Same flow either way", flag="--train-stream",
                          choices=("auto", "yes", "no"))

    def chain_length(self, n_chains: int) -> int:
        """Configurations per chain of a separate training chain (``sample="separate"``): the training and the
        held-out ones, ``ceil((n_train + held_out) / n_chains)``."""
        return -(-(int(self.n_train) + int(self.held_out)) // int(n_chains))

    @property
    def streamed(self) -> bool | None:
        """``stream`` for :func:`corrflow.pipeline.handles.training_sets` (None: by size)."""
        return {"auto": None, "yes": True, "no": False}[self.stream]

    def check(self) -> None:
        positive_ints(self, "epochs", "batch_size")
        non_negative_ints(self, "held_out", "patience")
        if self.patience and not self.held_out:
            raise ValueError("patience needs held-out configurations (held_out > 0)")
        if isinstance(self.n_train, bool) or self.n_train < 2:
            raise ValueError(f"n_train must be >= 2, got {self.n_train}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def config(self, ndim: int, kind: str = "residual", network: bool = False) -> Any:
        """:class:`corrflow.flows.train.TrainConfig` (optimizer resolved for a ``ndim``-dimensional lattice, the
        flow ``kind`` and whether it has ``network`` coefficients)."""
        from ..flows.train import TrainConfig, resolve_optimizer

        opt = resolve_optimizer(self.optimizer, ndim, kind, network)
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           seed=self.train_seed, optimizer=opt, patience=self.patience)


@dataclass(frozen=True)
class ErrorSettings(Settings):
    """Error analysis: Wolff's Gamma method or the binned jackknife over paired samples."""

    method: str = setting("gamma", "error analysis of scalar observables: gamma | jackknife",
                          choices=("gamma", "jackknife"))
    bin_size: int = setting(0, "jackknife bin size [0: ceil(bin-tau-factor x tau_int)]")
    bin_tau_factor: float = setting(20.0, "automatic bin size in units of tau_int")
    tau_exp: float = setting(0.0, "exponential autocorrelation time of the chains' slowest mode, in stored "
                                  "configurations (e.g. of the topological charge, from a longer run): Gamma-method "
                                  "sums stop where the autocorrelation function is compatible with zero and add "
                                  "the exponential tail beyond (Schaefer, Sommer, Virotta), and the automatic bin "
                                  "sizes follow the larger tau_int; conservative on short chains [0: Wolff's window]")

    def check(self) -> None:
        non_negative_ints(self, "bin_size")
        if not self.bin_tau_factor > 0:
            raise ValueError(f"bin_tau_factor must be positive, got {self.bin_tau_factor}")
        from ..stats.windowing import Windowing

        Windowing.from_tau_exp(self.tau_exp)  # a one-line ValueError for a bad tau_exp

    @property
    def windowing(self) -> Any:
        """The Gamma method's :class:`corrflow.stats.Windowing`: Wolff's, or with the exponential tail."""
        from ..stats import Windowing

        return Windowing.from_tau_exp(self.tau_exp)


@dataclass(frozen=True)
class AnalysisSettings(Settings):
    """Base of an analysis's settings: ``name`` (command name), ``title`` and the fields the command line hides
    (``cli_hidden``: settings of a group that the analysis does not use; they keep the analysis defaults and a run
    file may not set them)."""

    name: ClassVar[str] = "analysis"
    cli_hidden: ClassVar[frozenset[str]] = frozenset()
    cli_overrides: ClassVar[dict[str, dict[str, str]]] = {}

    def check(self) -> None:
        pass

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: "Settings | None" = None) -> "Settings":
        """As :meth:`Settings.from_dict`; settings the analysis fixes (``cli_hidden``) may appear only with their
        fixed value (a record's settings hold them)."""
        defaults = cls()
        clean: dict[str, Any] = {}
        for k, v in data.items():
            if k in cls.groups() and isinstance(v, Mapping):
                v = {kk: vv for kk, vv in v.items() if not cls._fixed(defaults, kk, vv)}
            elif cls._fixed(defaults, k, v):
                continue
            clean[k] = v
        return super().from_dict(clean, base)

    @classmethod
    def _fixed(cls, defaults: "AnalysisSettings", key: str, value: Any) -> bool:
        """True if ``key`` is fixed by the analysis and ``value`` is its fixed value; ``ValueError`` if another."""
        if key not in cls.cli_hidden:
            return False
        _, _, tp = cls._lookup(key)
        fixed = defaults.get(key)
        if coerce(value, tp, key) != fixed:
            raise ValueError(f"{key} is fixed to {fixed!r} by {cls.name}; it cannot be set to {value!r}")
        return True

    def to_toml(self, header: Mapping[str, Any] | None = None) -> str:
        """The run file: every setting except those the analysis fixes."""
        import tomli_w

        d = self.to_dict()
        for k, v in list(d.items()):
            if isinstance(v, dict):
                d[k] = {kk: vv for kk, vv in v.items() if kk not in self.cli_hidden}
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        return tomli_w.dumps({**(dict(header) if header else {}), **scalars, **tables})
