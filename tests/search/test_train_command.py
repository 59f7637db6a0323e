from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from evaluators.training import load_checkpoint
from search.cli import main
from search.run_record import read_run_record
from search_spaces.builder import build_model
from search_spaces.serialize import load_spec_file

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
DATA = ["data.num_classes=3", "data.train_size=60", "data.test_size=12", "data.val_size=12"]
TRAINER = ["trainer.steps=6", "trainer.batch_size=16", "trainer.eval_every=3", "trainer.progress=false"]


def test_train_command_writes_the_run_files_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(["train", f"arch='{TINY}'", *DATA, *TRAINER, "trainer.ema_decay=0.5", f"hydra.run.dir={run_dir}"])
    out = capsys.readouterr().out
    assert "synthetic: test top-1" in out and "chance 33.3%" in out
    for name in ("spec.json", "run_config.json", "checkpoint.pt", "weights.safetensors", "metrics.json",
                 "metrics.csv", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    spec = load_spec_file(run_dir / "spec.json")
    assert spec.num_classes == 3 and str(spec).startswith("in_r32_c3 stem_k3_c8_s2_hs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["split"] == "test" and metrics["ema"]
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert metrics["data"]["name"] == "synthetic" and metrics["budget"]["steps"] == 6
    assert [h["step"] for h in metrics["history"]] == [3, 6]
    assert (run_dir / "metrics.csv").read_text().splitlines()[0].startswith("step,epoch,lr,train_loss")
    model = build_model(spec)
    model.load_state_dict(load_file(run_dir / "weights.safetensors"), strict=True)
    record = read_run_record(run_dir)
    assert record is not None and (record.kind, record.spec) == ("train", spec)
    assert record.weights == "weights.safetensors"
    assert record.accuracy["top1"] == metrics["top1"] and record.split == "test"
    assert record.budget == metrics["budget"] and record.latency_ms is None

    weights = (run_dir / "weights.safetensors").read_bytes()
    main(["train", f"resume={run_dir}", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'other'}"])
    assert "synthetic: test top-1" in capsys.readouterr().out
    assert (run_dir / "weights.safetensors").read_bytes() == weights  # finished run: same result
    assert json.loads((run_dir / "metrics.json").read_text())["top1"] == metrics["top1"]


def test_train_command_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "search", "train", f"resume={tmp_path}"],
                            capture_output=True, text=True, timeout=120,
                            env=ONE_THREAD)
    assert result.returncode == 2 and "is not a training run dir (no run_config.json" in result.stderr
    result = subprocess.run([sys.executable, "-m", "search", "train", "data.name=imagenet",
                             f"hydra.run.dir={tmp_path / 'x'}"], capture_output=True, text=True, timeout=120,
                            env=ONE_THREAD)
    assert result.returncode == 2 and "data.name: 'imagenet' is unknown" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_killed_train_process_resumes_to_the_uninterrupted_weights(tmp_path):
    """A real SIGKILL mid-run, then 'resume=<dir>': same weights as a run never interrupted."""
    args = ["arch=mobilenet_v3_small", "width_mult=0.5", *DATA, "trainer.steps=60", "trainer.batch_size=16",
            "trainer.checkpoint_every=10", "trainer.progress=false"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "search", "train", *args, f"hydra.run.dir={killed}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    try:
        deadline = time.monotonic() + 120
        while (not (killed / "checkpoint.pt").exists() and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    step = load_checkpoint(killed / "checkpoint.pt")["step"]
    assert 10 <= step < 60 and not (killed / "weights.safetensors").exists()

    main(["train", f"resume={killed}", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'unused'}"])
    main(["train", *args, f"hydra.run.dir={tmp_path / 'whole'}"])
    resumed = load_file(killed / "weights.safetensors")
    whole = load_file(tmp_path / "whole" / "weights.safetensors")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
