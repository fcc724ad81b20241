"""Shared checks of the analyses' records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest


def check_variance_reduction_shape(vr: Mapping[str, Any]) -> None:
    """``record["variance_reduction"]`` has the one shape of every analysis: ``{"definition": str, quantity:
    {estimator: {"vs_<reference>": float | None, "cost_adjusted_vs_<reference>": float | None, ...extras}}}``, each
    reference with both numbers (:func:`corrflow.pipeline.record.variance_reduction_entry`)."""
    from corrflow.pipeline.record import VARIANCE_REDUCTION_DEFINITION

    assert vr["definition"] == VARIANCE_REDUCTION_DEFINITION
    quantities = {q: by_estimator for q, by_estimator in vr.items() if q != "definition"}
    assert quantities, vr
    for q, by_estimator in quantities.items():
        assert isinstance(by_estimator, Mapping) and by_estimator, q
        for e, entry in by_estimator.items():
            assert isinstance(entry, Mapping), (q, e)
            refs = {k[len("vs_"):] for k in entry if k.startswith("vs_")}
            assert refs and {k[len("cost_adjusted_vs_"):] for k in entry if k.startswith("cost_adjusted_vs_")} == refs
            for r in refs:
                for k in (f"vs_{r}", f"cost_adjusted_vs_{r}"):
                    assert entry[k] is None or isinstance(entry[k], float), (q, e, k, entry[k])


@pytest.fixture
def assert_vr_shape() -> Callable[[Mapping[str, Any]], None]:
    """:func:`check_variance_reduction_shape`, for the analysis tests."""
    return check_variance_reduction_shape
