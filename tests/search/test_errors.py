"""The three ways a command ends (search_spaces.errors): bad input is one ``error:`` line and exit 2,
a failed run one ``failed:`` line and exit 1, a bug a traceback. One CLI test per exception class."""

from __future__ import annotations

import functools
import multiprocessing

import pytest

from evaluators.data import DataConfig
from search import cli
from search.cli import main
from search.components import SearchSettings, build_components
from search.runner import _worker
from search.study import StudyConfig
from search_spaces.errors import (
    ConfigError,
    DataError,
    ExportError,
    LatencyError,
    MobilenasError,
    RunFailure,
    SpecError,
    TrainingDiverged,
    outcome,
)
from search_spaces.limits import active_limits

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
TRAIN = ["train", f"arch='{TINY}'", "data.num_classes=3", "data.train_size=60", "data.test_size=12",
         "data.val_size=12", "trainer.steps=6", "trainer.batch_size=16", "trainer.eval_every=3",
         "trainer.progress=false"]
EXPORT = ["export", f"arch='{TINY}'", "onnx=false", "torchscript=false"]


@pytest.fixture
def raised(monkeypatch) -> list[type[BaseException]]:
    """The classes of the exceptions the CLI reported (it maps each through ``outcome``)."""
    seen: list[type[BaseException]] = []

    def spy(err):
        seen.append(type(err))
        return outcome(err)

    monkeypatch.setattr(cli, "outcome", spy)
    return seen


def exits(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI on ``args``, expecting it to exit: its status and its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(args)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return caught.value.code, err


# --- bad input: exit 2 -----------------------------------------------------------------------------


def test_config_error(capsys, tmp_path, raised):
    code, err = exits([*TRAIN, "trainer.ema_decay=1.5", f"hydra.run.dir={tmp_path}"], capsys)
    assert (code, err) == (2, "error: trainer.ema_decay: must be in [0, 1); 0 turns EMA off, got 1.5")
    assert raised == [ConfigError]


def test_spec_error(capsys, raised):
    code, err = exits(["show", "arch=ir_k4_e16_c16_s2_re"], capsys)
    assert code == 2
    assert err == "error: token 1 'ir_k4_e16_c16_s2_re': block: kernel must be one of {3, 5, 7}, got 4"
    assert raised == [SpecError]


def test_data_error(capsys, tmp_path, raised):
    code, err = exits([*TRAIN, "data=mnist", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
                      capsys)
    assert code == 2
    assert err == (f"error: data.root: {tmp_path} has no train-images-idx3-ubyte[.gz]; an IDX data set needs "
                   "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                   "t10k-labels-idx1-ubyte[.gz]")
    assert raised == [DataError]


def test_data_error_for_a_checkpoint_to_resume(capsys, tmp_path, raised):
    main([*TRAIN, "trainer.steps=2", "trainer.eval_every=2", f"hydra.run.dir={tmp_path}"])
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, err = exits([*TRAIN, f"resume={tmp_path}"], capsys)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'checkpoint.pt'}: not a readable checkpoint (")
    assert raised == [DataError]


def test_latency_error(capsys, tmp_path, raised):
    table = tmp_path / "table.json"
    table.write_text("{not json")
    code, err = exits(["lut", "action=info", f"latency.table={table}", "space=v3_small", "resolution=32",
                       "num_classes=10", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert err.startswith(f"error: {table}: not a valid latency table, the file is truncated or corrupt (")
    assert err.endswith(f"); delete {table} to measure a new table, or restore it")
    assert raised == [LatencyError]


def test_export_error(capsys, tmp_path, raised):
    code, err = exits([*EXPORT, "name=../x", f"hydra.run.dir={tmp_path}"], capsys)
    assert code == 2
    assert err == ("error: export.name: '../x' is not a name; use 1-255 letters, digits, '.', '_' or '-' "
                   "(one path component, not '.' or '..'); give a directory with out=")
    assert raised == [ExportError]


def test_bare_mobilenas_error_raised_by_a_command(capsys, monkeypatch, raised):
    """The root class itself (raised where no subclass says more) is bad input too."""
    import search.commands.show as show

    def run(cfg):
        raise MobilenasError("show.arch: not what was expected")

    monkeypatch.setattr(show, "run", run)
    assert exits(["show"], capsys) == (2, "error: show.arch: not what was expected")
    assert raised == [MobilenasError]


def test_an_output_path_that_cannot_be_written_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, err = exits(["lut", "action=export-kit", "space=v3_small", "latency=onnxruntime",
                       f"out={blocker / 'kit'}", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert err.startswith("error: [Errno 20] Not a directory:") and str(blocker) in err


# --- a failed run: exit 1 --------------------------------------------------------------------------


@pytest.mark.usefixtures("perturbed_torchscript")
def test_run_failure_of_an_export_check(capsys, tmp_path, raised):
    """A TorchScript file that does not reproduce the network (here: outputs scaled by 1.01)."""
    code, err = exits([*EXPORT, "torchscript=true", f"out={tmp_path / 'e'}", f"hydra.run.dir={tmp_path}"],
                      capsys)
    assert code == 1
    assert err.startswith("failed: model.torchscript.pt: outputs differ from PyTorch by ")
    assert err.endswith("the file does not reproduce the network")
    assert not (tmp_path / "e").exists()
    assert raised == [RunFailure]


def test_training_diverged(capsys, tmp_path, raised):
    code, err = exits([*TRAIN, "trainer.lr=1e3", f"hydra.run.dir={tmp_path}"], capsys)
    assert code == 1
    assert err.startswith("failed: training diverged: training loss is ")
    assert err.endswith(f"see {tmp_path / 'metrics.json'}; lower trainer.lr or set trainer.clip_grad_norm")
    assert raised == [TrainingDiverged]


# --- a bug: a traceback ----------------------------------------------------------------------------


@pytest.fixture
def buggy_show(monkeypatch):
    import search.commands.show as show

    def run(cfg):
        return 1 / 0

    monkeypatch.setattr(show, "run", run)


def test_a_bug_propagates(buggy_show, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra re-raises instead of printing
    with pytest.raises(ZeroDivisionError):
        main(["show"])


def test_a_bug_is_reported_with_its_traceback(buggy_show, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        main(["show"])
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert "error:" not in err and "failed:" not in err


# --- spawned search workers ------------------------------------------------------------------------


def test_bad_input_in_a_spawned_search_worker_is_one_line_and_exit_2(tmp_path, capfd):
    settings = SearchSettings(data=DataConfig(name="mnist", root=str(tmp_path)))
    worker = multiprocessing.get_context("spawn").Process(
        target=_worker, args=(functools.partial(build_components, settings), StudyConfig(workers=2),
                              f"sqlite:///{tmp_path / 'study.db'}", active_limits()))
    worker.start()
    worker.join(timeout=120)
    err = capfd.readouterr().err.strip()
    assert worker.exitcode == 2
    assert "Traceback" not in err and "\n" not in err
    assert err.startswith(f"error: data.root: {tmp_path} has no train-images-idx3-ubyte[.gz]")


def test_run_failure_is_not_bad_input():
    assert not issubclass(RunFailure, MobilenasError) and issubclass(TrainingDiverged, RunFailure)
    assert outcome(TrainingDiverged("x")) == ("failed", 1) and outcome(MobilenasError("x")) == ("error", 2)
