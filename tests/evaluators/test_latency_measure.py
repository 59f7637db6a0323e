from __future__ import annotations

import pytest
import torch

from evaluators.latency import LatencyProtocol, measure_latency, measure_many
from evaluators.latency.drift import corrected_runs
from evaluators.latency.protocol import Fingerprint
from search_spaces.builder import build_model
from search_spaces.errors import LatencyError
from search_spaces.reference import reference_spec

FAST = {"resolution": 32, "warmup": 1, "runs": 3}


@pytest.fixture(scope="module")
def tiny():
    return reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)


def test_measurement_returns_the_protocol_it_used_and_restores_threads(tiny):
    protocol = LatencyProtocol(threads=1, **FAST)
    before_threads, before_rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(2)
    try:
        result = measure_latency(tiny, protocol)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before_threads)
    assert result.protocol is protocol
    assert result.n == 3 and result.ms > 0 and result.iqr_ms >= 0
    assert result.ms == result.median_ms
    assert torch.equal(torch.get_rng_state(), before_rng)  # measuring does not move the global RNG
    assert "median of 3 runs" in str(result)
    assert result.reference_ms is not None and result.reference_ms > 0  # drift-corrected on cpu
    assert f"drift-corrected (reference {result.reference_ms:.3f} ms)" in str(result)
    raw = measure_latency(tiny, protocol.replace(drift_correction="none"))
    assert raw.reference_ms is None and "drift" not in str(raw)


def test_drift_correction_cancels_slow_spells_of_the_machine():
    """The machine runs at full speed or 1.5x slower in spells; a 2 ms target and a 0.5 ms
    reference slow down alike. Raw runs are mostly slow; corrected ones are all 2 ms."""
    spells = [1.0] * 8 + [1.5] * 12
    calls = {"n": 0}

    def slowdown() -> float:
        return spells[(calls["n"] // 4) % len(spells)]

    def run() -> float:
        calls["n"] += 1
        return 2.0 * slowdown()

    def reference() -> float:
        return 0.5 * slowdown()

    raw = [run() for _ in range(80)]
    assert sorted(raw)[40] == pytest.approx(3.0)  # the median is a slow run
    corrected = corrected_runs(run, reference, 80, reference_ms=0.5, estimate_ms=2.0)
    assert len(corrected) == 80
    assert sorted(corrected)[40] == pytest.approx(2.0)
    assert sum(abs(c - 2.0) < 1e-9 for c in corrected) >= 60  # only groups straddling a change are off


def test_layers_modules_and_interleaved_rounds(tiny):
    protocol = LatencyProtocol(statistic="min", **FAST)
    layer = list(tiny.layers())[3]
    model = build_model(tiny).train()
    results = measure_many([layer, model], protocol, rounds=2, input_shape=(1, 3, 32, 32))
    assert [r.n for r in results] == [4, 4]  # ceil(3 / 2) runs in each of 2 rounds
    assert all(r.ms <= r.median_ms for r in results)
    assert model.training  # the caller's module is copied, never switched to eval


def test_resolution_must_match_the_protocol(tiny):
    with pytest.raises(
        LatencyError, match="the spec's resolution 32 differs from the protocol's resolution 64"
    ):
        measure_latency(tiny, LatencyProtocol(resolution=64, warmup=0, runs=1))


def test_foreign_devices_and_other_machines_are_refused(tiny):
    with pytest.raises(LatencyError, match="'pixel7-tflite' is not this machine"):
        measure_latency(tiny, LatencyProtocol(device="pixel7-tflite", **FAST))
    elsewhere = LatencyProtocol(fingerprint=Fingerprint("Some Other CPU x64", "-", torch.__version__), **FAST)
    with pytest.raises(LatencyError, match=r"recorded on another machine \(Some Other CPU x64"):
        measure_latency(tiny, elsewhere)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_measurement_uses_the_gpu(tiny):
    protocol = LatencyProtocol(device="cuda", **FAST)
    result = measure_latency(tiny, protocol)
    assert result.protocol.device == "cuda:0" and result.ms > 0
    assert protocol.fingerprint.accelerator != "-"
    assert "CUDA events" in protocol.describe()
