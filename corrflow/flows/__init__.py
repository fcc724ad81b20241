"""Gauge-equivariant residual flows between action parameters (see :mod:`corrflow.flows.layers`)."""

from .layers import INVERSE_TOL, Flow, ResidualLayer, make_flow
from .staples import LOOPS, layer_masks, loop_paths, n_staples, path_product, staple_sums

__all__ = ["Flow", "ResidualLayer", "make_flow", "INVERSE_TOL", "LOOPS", "layer_masks", "loop_paths",
           "n_staples", "path_product", "staple_sums"]
