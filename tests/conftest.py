"""Shared fixtures: the V3 spaces at small resolution."""

from __future__ import annotations

import optuna
import pytest

from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session", params=["mobilenet_v3_large", "mobilenet_v3_small"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace(reference_spec(request.param, num_classes=10, resolution=32))
