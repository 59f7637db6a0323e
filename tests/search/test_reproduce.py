from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evaluators.latency import LatencyConfig
from search.commands.reproduce import figures_table, reference_figures
from search_spaces.reference import REFERENCE_PARAMS


def test_reference_figures_are_the_exact_counts_with_a_stated_latency():
    rows = reference_figures(LatencyConfig(warmup=1, runs=3))
    by_name = {r["name"]: r for r in rows}
    for name, params in REFERENCE_PARAMS.items():
        assert by_name[name]["params"] == params
    assert round(by_name["mobilenet_v3_large"]["madds_m"], 1) == 226.0
    assert round(by_name["mobilenet_v3_small"]["madds_m"], 1) == 59.6
    assert by_name["mobilenet_v3_large"]["paper_madds_m"] == 219.0
    assert by_name["mobilenet_v3_large"]["latency_ms"] > 0 and by_name["mobilenet_v3_small"]["latency_ms"] > 0
    assert by_name["mobilenet_v3_small"]["protocol"]["resolution"] == 224
    assert by_name["mobilenet_v3_small"]["protocol"]["threads"] == 1
    table = figures_table(rows)
    assert "5,483,032" in table and "2,542,856" in table and " NO " not in table


def test_reproduce_command_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "search", "reproduce", "experiment=v3_large", "latency.runs=3",
         "latency.warmup=1", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v3_large  5,483,032  yes" in result.stdout
    rows = json.loads((tmp_path / "figures.json").read_text())
    assert [r["params"] for r in rows] == [5_483_032, 2_542_856]


def test_reproduce_rejects_unknown_action(tmp_path):
    result = subprocess.run([sys.executable, "-m", "search", "reproduce", "action=dance",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "action: 'dance' is not one of figures, search, train" in result.stderr


def test_reproduce_search_trains_its_proxies_with_the_search_trainer(tmp_path, monkeypatch):
    from dataclasses import asdict

    import search.pipeline as pipeline
    from search.commands.reproduce import _search, trainer_preset
    from search.schema import compose_options

    seen = {}

    class Stop(Exception):
        pass

    def fake_run(job, run_dir):
        seen["job"], seen["run_dir"] = job, run_dir
        raise Stop

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    cfg = compose_options("reproduce", ["action=search", "search_trainer=fast"])
    given = asdict(cfg)
    with pytest.raises(Stop):
        _search(cfg, tmp_path, "mobilenet_v3_small")
    fast = trainer_preset("fast", "search_trainer")
    assert seen["job"].settings.trainer == fast and seen["run_dir"] == tmp_path
    assert fast.ema_decay != cfg.trainer.ema_decay  # the V3 recipe stays the config's trainer
    assert asdict(cfg) == given  # the search is given its trainer, the config is not changed


def test_unknown_trainer_preset_names_the_key_and_the_presets():
    from search.commands.reproduce import trainer_preset
    from search_spaces.errors import ConfigError

    message = r"search_trainer: 'turbo' is not a trainer preset; choose one of .*fast.*v3_recipe"
    with pytest.raises(ConfigError, match=message):
        trainer_preset("turbo", "search_trainer")
