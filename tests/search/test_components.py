from __future__ import annotations

import pytest

from evaluators.accuracy import ProxyConfig
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig
from search.components import SearchSettings, build_components
from search.objectives import ObjectiveConfig

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
