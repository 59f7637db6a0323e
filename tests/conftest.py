"""Shared fixtures: the V3 spaces at small resolution; one torch thread for tiny networks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import optuna
import pytest
import torch

from evaluators.data import DataConfig, DatasetSplits, load_dataset
from search_spaces.blockstring import from_string
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def _speed_unit_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Latency units calibrated by tests go to a temporary store, not the user's cache."""
    before = os.environ.get("MOBILENAS_CACHE_DIR")
    os.environ["MOBILENAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["MOBILENAS_CACHE_DIR"]
    else:
        os.environ["MOBILENAS_CACHE_DIR"] = before


@pytest.fixture(scope="session", params=["mobilenet_v3_large", "mobilenet_v3_small"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace(reference_spec(request.param, num_classes=10, resolution=32))


# A four-class network with three bnecks: the supernet tests' space around it stays tiny
TINY_SEED = ("in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k5_e24_c16_s2_hs ir_k3_e32_c16_s1_hs "
             "head_c32_h48_hs_d0.2_n4")
TINY_DATA = DataConfig(num_classes=4, train_size=160, test_size=16, val_size=64)


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    """A space of 2 widths and 2 expansions around :data:`TINY_SEED`."""
    return SearchSpace(from_string(TINY_SEED), widths=(0.75, 1.0), expansions=(0.5, 1.0))


@pytest.fixture(scope="session")
def tiny_data_config() -> DataConfig:
    """Synthetic four-class data at 32x32 for :func:`tiny_space`'s networks."""
    return TINY_DATA


@pytest.fixture(scope="session")
def tiny_data(tiny_data_config: DataConfig) -> DatasetSplits:
    return load_dataset(tiny_data_config)


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
