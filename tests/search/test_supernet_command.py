from __future__ import annotations

import contextlib
import io
import json

import pytest

from evaluators.supernet import load_supernet
from search.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
SPACE = [f"space.seed='{TINY}'", "space.widths=[0.75,1.0]", "space.expansions=[0.5,1.0]"]
DATA = ["data.num_classes=3", "data.train_size=60", "data.test_size=12", "data.val_size=12"]
TRAINER = ["threads=1", "trainer.steps=4", "trainer.batch_size=16", "trainer.eval_every=2",
           "trainer.progress=false", "trainer.bn_recalibrate=1"]
EVAL = ["action=eval", "calib_batches=2", "batch_size=16"]


@pytest.fixture(autouse=True)
def run_dirs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's default run dirs (runs/supernet/...) land here


def one_error_line(capsys, argv: list[str], status: int) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == status
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    """A tiny supernet trained through the command, and what it printed."""
    tmp = tmp_path_factory.mktemp("supernet")
    run_dir = tmp / "run"
    out = io.StringIO()  # module-scoped fixtures cannot use capsys
    with contextlib.redirect_stdout(out):
        main(["supernet", "action=train", *SPACE, *DATA, *TRAINER, f"out={run_dir}",
              f"hydra.run.dir={tmp / 'hydra'}"])
    return run_dir, out.getvalue()


def test_train_writes_a_supernet_run_dir(trained):
    run_dir, out = trained
    assert "supernet on synthetic: val top-1 largest" in out and "smallest" in out and "chance 33.3%" in out
    curves = [f"learning_curve_{size}.png" for size in ("largest", "smallest", "seed")]
    for name in ("run_config.json", "checkpoint.pt", "metrics.json", "metrics.csv", *curves):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["budget"]["steps"] == 4
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    assert set(metrics["sizes"]) == {"largest", "smallest", "seed"}
    assert all(0 <= figures["top1"] <= 1 for figures in metrics["sizes"].values())
    net, record = load_supernet(run_dir)
    assert net.space.seed.num_classes == 3 and str(net.space.seed).startswith("in_r32_c3 stem_k3_c8_s2_hs")
    assert record["data"]["num_classes"] == 3 and record["supernet"]["num_random"] == 2


def test_resuming_a_finished_run_gives_back_its_supernet(trained, tmp_path, capsys):
    run_dir, _ = trained
    weights = (run_dir / "supernet.safetensors").read_bytes()
    top1 = json.loads((run_dir / "metrics.json").read_text())["sizes"]["smallest"]["top1"]
    main(["supernet", "action=train", f"resume={run_dir}", "threads=1", "trainer.progress=false",
          f"hydra.run.dir={tmp_path / 'h'}"])
    assert "supernet on synthetic" in capsys.readouterr().out
    assert (run_dir / "supernet.safetensors").read_bytes() == weights
    assert json.loads((run_dir / "metrics.json").read_text())["sizes"]["smallest"]["top1"] == top1
    argv = ["supernet", "action=train", f"resume={tmp_path}", f"hydra.run.dir={tmp_path}"]
    line = one_error_line(capsys, argv, 2)
    assert line.startswith("error: resume: ") and "is not a supernet run dir (no run_config.json)" in line


def test_eval_scores_a_sub_network_and_is_reproducible(trained, capsys):
    run_dir, _ = trained
    main(["supernet", *EVAL, f"run={run_dir}", "arch=smallest"])
    first = capsys.readouterr().out
    assert "smallest: synthetic val top-1" in first and "params" in first and "MAdds" in first
    main(["supernet", *EVAL, f"run={run_dir}", "arch=smallest"])
    again = capsys.readouterr().out
    def score(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("smallest: ")).split("scored in")[0]

    assert score(first) == score(again)
    main(["supernet", *EVAL, f"run={run_dir}", f"arch='{TINY}'"])  # the seed, with the task's classes
    out = capsys.readouterr().out
    assert "val top-1" in out and "spec: in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re" in out
    assert "_n3" in out


def test_eval_refuses_an_arch_outside_the_space_naming_the_field(trained, capsys):
    run_dir, _ = trained
    outside = TINY.replace("ir_k3_e16_c8_s2_se_re", "ir_k3_e17_c8_s2_se_re")
    line = one_error_line(capsys, ["supernet", *EVAL, f"run={run_dir}", f"arch='{outside}'"], 2)
    assert line.startswith("error: arch=") and "not in the supernet's space" in line
    assert "s0.b0.exp: 17 channels" in line


def test_eval_needs_a_supernet_run_dir(tmp_path, capsys):
    line = one_error_line(capsys, ["supernet", *EVAL, f"hydra.run.dir={tmp_path / 'h'}"], 2)
    assert line.startswith("error: run: action=eval needs run=")
    hydra_dir = f"hydra.run.dir={tmp_path / 'h'}"
    line = one_error_line(capsys, ["supernet", *EVAL, f"run={tmp_path}", hydra_dir], 2)
    assert line.startswith("error: ") and str(tmp_path) in line


def test_a_diverging_supernet_run_fails_with_exit_1_and_saves_no_weights(tmp_path, capsys):
    run_dir = tmp_path / "run"
    line = one_error_line(capsys, ["supernet", "action=train", *SPACE, *DATA, *TRAINER, "trainer.lr=1e3",
                                   f"out={run_dir}", f"hydra.run.dir={tmp_path / 'h'}"], 1)
    assert line.startswith("failed: supernet training diverged: ") and "lower trainer.lr" in line
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"
    assert not (run_dir / "supernet.safetensors").exists() and not (run_dir / "supernet.json").exists()
