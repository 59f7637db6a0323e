"""``mobilenas search``: the main job. A latency-constrained search with Optuna, then (by
default) NetAdapt refinement of the winner and its export."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from search.pipeline import prepare_search, run_pipeline


def run(cfg: DictConfig) -> None:
    run_pipeline(prepare_search(cfg), Path(HydraConfig.get().runtime.output_dir))
