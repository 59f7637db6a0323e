"""``mobilenas search``: the main job. A latency-constrained search with Optuna, then (by
default) NetAdapt refinement of the winner and its export."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from search.pipeline import SearchConfig, prepare_search, run_pipeline

CONFIG = SearchConfig


def run(cfg: SearchConfig) -> None:
    run_pipeline(prepare_search(cfg), Path(HydraConfig.get().runtime.output_dir))
