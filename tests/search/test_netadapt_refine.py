"""``mobilenas refine`` end to end on a tiny budget, its resume, its seeds and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from search.cli import main
from search.commands.refine import resolve_seed
from search.run_record import read_run_record
from search_spaces.builder import build_model
from search_spaces.reference import reference_spec
from search_spaces.serialize import load_spec_file, save_spec

TINY = ["arch=mobilenet_v3_small", "width_mult=0.5", "progress=false",
        "data.train_size=200", "data.test_size=50", "trainer.batch_size=16", "trainer.progress=false",
        "netadapt.pretrain_steps=3", "netadapt.short_steps=1", "netadapt.final_steps=1",
        "netadapt.target_ratio=0.95", "netadapt.delta_ratio=0.02",
        "latency.warmup=1", "latency.runs=3", "latency.auto_fit=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_refine_writes_what_export_reads_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["refine", *TINY, f"latency.tables_dir={tmp_path / 'tables'}", f"hydra.run.dir={run_dir}"]
    main(args)
    out = capsys.readouterr().out
    assert "NetAdapt" in out and f"mobilenas export run={run_dir}" in out
    winner = load_spec_file(run_dir / "winner.json")
    model = build_model(winner)
    model.load_state_dict(load_file(str(run_dir / "weights.safetensors")), strict=True)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    summary = json.loads((run_dir / "summary.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    assert summary["spec"] == str(winner) == history[-1]["spec"]
    assert summary["iterations"] == len(history) - 1
    assert summary["status"] in ("target_met", "no_proposal", "max_iterations")
    if summary["status"] == "target_met":
        assert summary["latency_ms"] <= summary["target_ms"]
    assert summary["protocol"]["device"] == "cpu" and summary["protocol"]["backend"] == "lut"
    assert summary["data"]["name"] == "synthetic" and summary["budget"]["short_steps"] == 1
    assert load_spec_file(run_dir / "seed.json") == reference_spec(
        "mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
    record = read_run_record(run_dir)  # what export reads: the same figures, typed
    assert record is not None and record.kind == "refine" and record.spec == winner
    assert record.weights == "weights.safetensors" and record.latency_ms == summary["latency_ms"]
    assert record.accuracy == {"val_top1": summary["accuracy"], "test_top1": summary["test_top1"]}
    assert record.protocol == summary["protocol"] and record.provenance["iterations"] == summary["iterations"]

    before = (run_dir / "winner.json").read_text()
    main(args)  # a finished run in the same dir is returned as is
    assert f"refined: {winner}" in capsys.readouterr().out
    assert (run_dir / "winner.json").read_text() == before


def test_seed_from_a_run_dir_and_bad_inputs(tmp_path, capsys):
    spec = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
    save_spec(spec, tmp_path / "spec.json")
    save_file(build_model(spec).state_dict(), str(tmp_path / "weights.safetensors"))
    seed, weights, where = resolve_seed(str(tmp_path))
    assert seed == spec and set(weights) == set(build_model(spec).state_dict()) and str(tmp_path) in where
    seed, weights, _ = resolve_seed("mobilenet_v3_small", width_mult=0.5)
    assert weights is None and seed.blocks == spec.blocks

    with pytest.raises(SystemExit) as exit_info:
        main(["refine", *TINY, "netadapt.metric=top5", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert exit_info.value.code == 2
    assert "error: netadapt.metric: 'top5' is not one of acc_per_latency, accuracy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["refine", *TINY, f"weights={tmp_path / 'missing.safetensors'}",
              f"hydra.run.dir={tmp_path / 'bad'}"])
    assert "missing.safetensors: weights file not found" in capsys.readouterr().err
