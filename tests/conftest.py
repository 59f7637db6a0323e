"""Shared fixtures: the V3 spaces at small resolution; one torch thread for tiny networks."""

from __future__ import annotations

import optuna
import pytest
import torch

from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session", params=["mobilenet_v3_large", "mobilenet_v3_small"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace(reference_spec(request.param, num_classes=10, resolution=32))


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny networks run fastest on one, and on a shared 2-core machine
    two threads can run 50x slower. Modules use it with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
