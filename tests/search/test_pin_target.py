from __future__ import annotations

import pytest

from evaluators.latency import LatencyConfig, latency_evaluator
from search.components import SearchSettings, pin_target
from search.objectives import Objective, ObjectiveConfig
from search.runner import Components
from search.study import StudyConfig, open_study
from search_spaces.config import SpaceConfig, build_space


def components(latency) -> Components:
    space = build_space(SpaceConfig(seed="mobilenet_v3_small"), num_classes=10, resolution=32)
    objective = Objective.from_config(ObjectiveConfig(mode="hard", target_ms=1.0), seed_latency_ms=0.0)
    return Components(space=space, objective=objective, accuracy=None, latency=latency)


def test_target_and_measured_latency_unit_are_kept_in_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_cfg = StudyConfig(name="pinned")
    cfg = LatencyConfig(mode="measure", warmup=1, runs=3)
    settings = SearchSettings(latency=cfg, objective=ObjectiveConfig(mode="hard", target_ms=1.0))

    first = components(latency_evaluator(cfg, 32))
    pinned = pin_target(first, settings, study_cfg, url)
    unit = first.latency.reference_ms
    assert unit is not None and unit > 0  # calibrated on the seed
    assert pinned.latency.reference_ms == unit and pinned.objective.target_ms == 1.0
    study = open_study(study_cfg, first.objective, url)
    assert study.user_attrs["latency_reference_ms"] == unit and study.user_attrs["target_ms"] == 1.0

    # a worker or a resumed run with another calibration takes the study's unit and target
    recalibrated = LatencyConfig(mode="measure", warmup=1, runs=3, reference_ms=9.9)
    later = components(latency_evaluator(recalibrated, 32))
    later.objective = Objective.from_config(ObjectiveConfig(mode="hard", target_ms=2.0), seed_latency_ms=0.0)
    resumed = pin_target(later, settings, study_cfg, url)
    assert later.latency.reference_ms == unit and resumed.latency.reference_ms == unit
    assert later.objective.target_ms == pytest.approx(1.0)


def test_only_a_changed_target_setting_is_warned_about_on_resume(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_cfg = StudyConfig(name="ratio")
    cfg = LatencyConfig(warmup=1, runs=3, tables_dir=str(tmp_path / "tables"), auto_fit=False)
    settings = SearchSettings(latency=cfg, objective=ObjectiveConfig(mode="hard", target_ratio=0.8))
    first = components(latency_evaluator(cfg, 32))
    first.objective = Objective.from_config(settings.objective, seed_latency_ms=2.0)
    pin_target(first, settings, study_cfg, url)

    rerun = components(latency_evaluator(cfg, 32))
    rerun.objective = Objective.from_config(settings.objective, seed_latency_ms=2.1)  # a noisy re-measure
    with caplog.at_level("WARNING", logger="mobilenas.search"):
        pin_target(rerun, settings, study_cfg, url)
    assert rerun.objective.target_ms == pytest.approx(1.6) and "keeps its target" not in caplog.text

    changed = SearchSettings(latency=cfg, objective=ObjectiveConfig(mode="hard", target_ratio=0.5))
    with caplog.at_level("WARNING", logger="mobilenas.search"):
        pin_target(components(latency_evaluator(cfg, 32)), changed, study_cfg, url)
    assert "keeps its target 1.6000 ms" in caplog.text and "'target_ratio': 0.5" in caplog.text
