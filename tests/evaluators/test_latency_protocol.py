from __future__ import annotations

import pytest
import torch

from evaluators.latency import Fingerprint, LatencyProtocol, local_fingerprint
from evaluators.latency.protocol import EXTERNAL
from search_spaces.errors import ConfigError


def test_defaults_state_everything_and_fingerprint_this_machine():
    protocol = LatencyProtocol()
    assert (protocol.device, protocol.threads, protocol.batch_size, protocol.resolution) == ("cpu", 1, 1, 224)
    assert (protocol.memory_format, protocol.statistic, protocol.timer) == ("contiguous", "median", "wall")
    assert protocol.warmup >= 1 and protocol.runs >= 10
    assert protocol.fingerprint == local_fingerprint("cpu")
    assert protocol.fingerprint.torch == torch.__version__
    assert protocol.local and protocol.measurable
    text = protocol.describe()
    assert text.startswith("cpu [") and "1 thread, batch 1, 224x224" in text and "median" in text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threads": 0}, r"latency.threads: must be an integer >= 1, got 0"),
        ({"batch_size": 1.5}, r"latency.batch_size: must be an integer >= 1"),
        ({"resolution": 16}, r"latency.resolution: must be an integer >= 32, got 16"),
        ({"statistic": "p90"}, r"latency.statistic: must be one of median, min, mean, got 'p90'"),
        ({"memory_format": "nhwc"}, r"latency.memory_format: must be one of contiguous, channels_last"),
        ({"device": "my phone"}, r"latency.device: 'my phone' is not a device name"),
        (
            {"timer": "thread_cpu", "threads": 2},
            r"thread_cpu measures one CPU thread; it needs device=cpu and threads=1",
        ),
        ({"runs": 0}, r"latency.runs: must be an integer >= 1, got 0"),
        ({"drift_correction": "yes"}, r"latency.drift_correction: must be one of reference, none, auto"),
        (
            {"device": "pixel7-tflite", "drift_correction": "reference"},
            r"latency.drift_correction: reference .* needs device=cpu, got device=pixel7-tflite",
        ),
    ],
)
def test_bad_fields_are_refused_with_the_field_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        LatencyProtocol(**changes)


def test_external_device_is_not_measurable_here():
    protocol = LatencyProtocol(device="pixel7-tflite", threads=4)
    assert protocol.fingerprint == EXTERNAL
    assert not protocol.local and not protocol.measurable


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="'cuda:0' needs CUDA, which this machine does not have"):
        LatencyProtocol(device="cuda")


def test_dict_roundtrip_and_differences():
    protocol = LatencyProtocol(resolution=96, threads=2, statistic="min")
    assert LatencyProtocol.from_dict(protocol.to_dict()) == protocol
    other = protocol.replace(threads=1, fingerprint=Fingerprint("Other CPU x8", "-", "2.0"))
    diffs = protocol.differences(other)
    assert diffs[0] == "threads: 2 vs 1"
    assert diffs[1].startswith("fingerprint: ") and "Other CPU x8" in diffs[1]
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['cores'\]"):
        LatencyProtocol.from_dict({**protocol.to_dict(), "cores": 4})


def test_drift_correction_defaults_to_reference_on_this_cpu_only():
    cpu = LatencyProtocol()
    assert cpu.drift_correction == "reference" and "drift-corrected" in cpu.describe()
    phone = cpu.replace(device="pixel7-tflite")  # what depends on the device is resolved again
    assert phone.drift_correction == "none" and "drift-corrected" not in phone.describe()
    assert LatencyProtocol(drift_correction="none").drift_correction == "none"
