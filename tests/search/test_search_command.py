"""The main job end to end on a tiny budget: search -> NetAdapt -> export, then a resume."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime
import optuna
import pytest

TINY = [
    "data.train_size=300", "data.test_size=100", "proxy.steps=4", "proxy.reports=2", "proxy.train_subset=200",
    "proxy.val_subset=100", "trainer.batch_size=32", "space.depth_deltas=[0]", "space.widths=[0.75,1.0]",
    "space.expansions=[0.5,1.0]", "latency.runs=3", "latency.warmup=1", "latency.fit_rounds=1",
    "study.n_trials=3", "study.workers=1", "study.n_startup_trials=2", "results.reference_points=false",
    "netadapt.pretrain_steps=4", "netadapt.short_steps=1", "netadapt.final_steps=2",
    "netadapt.delta_ratio=0.05", "netadapt.target_ratio=0.9",
]


def search(tmp_path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "search", "search", *TINY, f"latency.tables_dir={tmp_path / 'tables'}",
            f"hydra.run.dir={tmp_path / 'run'}", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_main_job_searches_refines_exports_and_resumes(tmp_path):
    result = search(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"].get("pruned", 0) == 3
    assert summary["winner"]["spec"] == (run / "winner.txt").read_text().strip()
    target = summary["objective"]["target_ms"]
    if any(c["feasible"] for c in summary["top"]):
        assert summary["winner"]["latency_ms"] <= target  # the winner meets the target
    refined = json.loads((run / "refine" / "summary.json").read_text())
    assert (refined["latency_ms"] <= 0.9 * summary["winner"]["latency_ms"] + 1e-9
            or refined["status"] != "target_met")
    export = run / "export"
    assert (export / "MODEL_CARD.md").exists() and (export / "weights.safetensors").exists()
    onnxruntime.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "winner:" in result.stdout and "exported to" in result.stdout

    # a rerun with more trials continues the same study and keeps its target
    again = search(tmp_path, "study.n_trials=4", "refine=false", "export=false")
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="main", storage=f"sqlite:///{run / 'study.db'}")
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 4
    assert study.user_attrs["target_ms"] == pytest.approx(target)


def test_bad_search_config_is_one_clear_line(tmp_path):
    result = search(tmp_path, "objective.mode=fastest")
    assert result.returncode == 2
    assert "objective.mode: 'fastest' is not one of soft, hard, pareto" in result.stderr
    assert "Traceback" not in result.stderr
    result = search(tmp_path, "study.sampler=cma")
    assert result.returncode == 2 and "study.sampler: 'cma' is not one of" in result.stderr
