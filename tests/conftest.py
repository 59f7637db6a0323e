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


class _ScaledOutputs(torch.nn.Module):
    """Wraps a module and scales its outputs by 1.01: an artifact off by 1% of the logits' scale."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1.01


@pytest.fixture
def perturbed_torchscript(monkeypatch):
    """Every TorchScript file the export reloads gives outputs 1% off the network's."""
    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: _ScaledOutputs(load(*args, **kwargs)))
