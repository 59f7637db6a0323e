"""Smoke tests of the benchmark scripts' core functions (the scripts themselves are not run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from search.results import Candidate
from search_spaces.reference import reference_spec

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def candidate(accuracy: float, latency_ms: float) -> Candidate:
    return Candidate(number=0, spec="", accuracy=accuracy, latency_ms=latency_ms, madds=0, params=0,
                     reward=accuracy, feasible=True)


def test_hypervolume_of_the_accuracy_latency_front() -> None:
    hypervolume = script("search_samplers").hypervolume
    found = [candidate(0.5, 2.0), candidate(0.8, 6.0), candidate(0.4, 3.0), candidate(0.9, 12.0)]
    # dominated (0.4, 3 ms) adds nothing; (0.9, 12 ms) is past the 10 ms reference and is left out
    assert hypervolume(found, 10.0) == pytest.approx((0.5 * 4 + 0.8 * 4) / 10)
    assert hypervolume([candidate(0.9, 12.0)], 10.0) == 0.0


def test_widest_multiplier_meets_the_target() -> None:
    widest = script("netadapt_vs_multiplier").widest_multiplier

    def make(m: float):
        return reference_spec("mobilenet_v3_small", width_mult=m, num_classes=4, resolution=32)

    def cost(spec) -> float:  # a cheap stand-in for latency that grows with the width
        return sum(b.exp * b.out for b in spec.blocks)

    target = 0.8 * cost(make(1.0))
    m, spec = widest(make, cost, target, high=1.0, tol=0.02)
    assert spec == make(m) and cost(spec) <= target
    assert 0.5 < m < 1.0 and cost(make(m + 0.02)) > cost(spec)
    with pytest.raises(ValueError, match="slower than the target"):
        widest(make, cost, 1e-6, high=1.0)
