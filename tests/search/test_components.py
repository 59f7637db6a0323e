from __future__ import annotations

import pytest

from evaluators.accuracy import AccuracyResult, ProxyConfig
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig, LatencyProtocol, MeasuredLatency, latency_evaluator
from evaluators.protocols import AccuracyEvaluator, LatencyEvaluator
from search.components import SearchSettings, build_components
from search.dry_run import MaddsLatency, SurrogateAccuracy
from search.objectives import ObjectiveConfig
from search.run_record import latency_protocol
from search_spaces.reference import reference_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels", [1, 3])
def test_components_share_the_proxy_data_and_its_input_channels(tmp_path, channels):
    settings = SearchSettings(
        data=DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32, channels=channels),
        proxy=ProxyConfig(kind="naswot", batch_size=8, train_subset=None, val_subset=None),
        latency=LatencyConfig(warmup=1, runs=3, tables_dir=str(tmp_path), auto_fit=False),
        objective=ObjectiveConfig(mode="hard", target_ms=1.0),
    )
    components = build_components(settings)
    # NetAdapt after the search fine-tunes on these splits, whatever the proxy (naswot keeps none)
    assert components.data is not None and components.data.in_channels == channels
    assert components.data.num_classes == 4
    assert components.space.seed.in_channels == channels
    assert {spec.in_channels for spec in components.references.values()} == {channels}
    result = components.accuracy.evaluate(components.space.seed)  # refused if channels disagree
    assert result.status == "completed"


def test_the_evaluators_the_search_uses_have_the_protocol_shapes(tmp_path):
    """Lookup-table, measured and the dry run's analytic latency, and the dry run's accuracy, all
    meet evaluators.protocols; the run record states any latency evaluator's protocol the same way."""
    latencies = [latency_evaluator(LatencyConfig(tables_dir=str(tmp_path), auto_fit=False), 32),
                 MeasuredLatency(LatencyProtocol(resolution=32, warmup=1, runs=3)),
                 MaddsLatency(resolution=32)]
    assert [e.backend for e in latencies] == ["lut", "measure", "analytic"]
    for evaluator in latencies:
        assert isinstance(evaluator, LatencyEvaluator)
        stated = latency_protocol(evaluator)
        assert stated["resolution"] == 32 and stated["backend"] == evaluator.backend
        assert stated["description"] == evaluator.describe() and stated["device"] == evaluator.protocol.device
    surrogate = SurrogateAccuracy()
    assert isinstance(surrogate, AccuracyEvaluator)
    result = surrogate.evaluate(reference_spec("mobilenet_v3_small", num_classes=10, resolution=32))
    assert isinstance(result, AccuracyResult) and result.ok and 0 < result.accuracy < 1
