"""The main job's supernet stage: with proxy=supernet|predictor and no proxy.supernet, a supernet is
trained in the run dir (resumed after a kill, reused on rerun), then searched on and NetAdapt scores
its proposals on it."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from evaluators.accuracy import ProxyConfig
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig
from evaluators.supernet import load_supernet
from evaluators.supernet.train import SupernetRun
from evaluators.training import TrainConfig
from search import pipeline, supernet_job
from search.commands.supernet import SupernetCommandConfig, prepare
from search.components import SearchSettings
from search.netadapt import NetAdaptConfig
from search.pipeline import (
    SearchConfig,
    SupernetStageConfig,
    prepare_search,
    run_pipeline,
    stage_job,
    supernet_stage,
)
from search.study import StudyConfig
from search_spaces.config import SpaceConfig
from search_spaces.errors import ConfigError, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")

SEED = ("in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k5_e24_c16_s2_hs ir_k3_e32_c16_s1_hs "
        "head_c32_h48_hs_d0.2_n4")
SPACE = SpaceConfig(seed=SEED, depth_deltas=[-1, 0], widths=[0.75, 1.0], kernels=[3, 5],
                    expansions=[0.5, 1.0])
DATA = DataConfig(num_classes=4, train_size=160, test_size=16, val_size=64)
STAGE = SupernetStageConfig(steps=2, batch_size=16, checkpoint_every=1, num_random=0)
TRAINER = TrainConfig(batch_size=16, progress=False)


def settings(kind: str = "supernet", supernet: str | None = None) -> SearchSettings:
    return SearchSettings(space=SPACE, data=DATA, trainer=TRAINER, reference_points=False,
                          proxy=ProxyConfig(kind=kind, supernet=supernet, calib_batches=1, val_subset=32))


def test_stage_trains_into_the_run_dir_resumes_after_a_kill_and_is_reused(tmp_path, monkeypatch, capsys):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # killed after its last step, before the supernet was saved
        patch.setattr(supernet_job, "save_supernet", killed)
        with pytest.raises(KeyboardInterrupt):
            supernet_stage(settings(), STAGE, tmp_path)
    out = tmp_path / "supernet"
    assert (out / "checkpoint.pt").is_file() and not (out / "supernet.json").exists()

    steps: list[int] = []
    original = SupernetRun.train_step
    monkeypatch.setattr(SupernetRun, "train_step",
                        lambda run, *args: steps.append(run.step) or original(run, *args))
    resumed = supernet_stage(settings(), STAGE, tmp_path)
    assert steps == []  # the checkpoint was at the last step: nothing trained again
    assert resumed.proxy.supernet == str(out)
    net, record = load_supernet(out)
    assert net.space.seed.num_classes == 4 and record["data"] == asdict(DATA)
    assert record["budget"]["steps"] == 2 and record["supernet"]["num_random"] == 0

    # the run dir of 'mobilenas supernet action=train': its metrics, and options that command resumes
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"
    assert prepare(SupernetCommandConfig(resume=str(out), trainer=TRAINER), out).options() == stage_job(
        settings(), STAGE, out).options()

    monkeypatch.setattr(supernet_job, "train_supernet", killed)  # a rerun reuses the saved supernet
    assert supernet_stage(settings(), replace(STAGE, checkpoint_every=2), tmp_path).proxy.supernet == str(out)
    assert f"supernet: reusing {out}" in capsys.readouterr().out
    # ... only when it was trained with the same options
    changed = replace(settings(), data=replace(DATA, seed=1))
    message = (f"supernet: {out} was trained with other options ({{}} differ); delete {out} to train a new "
               "supernet, or set them back")
    with pytest.raises(ConfigError) as refused:
        supernet_stage(changed, replace(STAGE, steps=3, num_random=1), tmp_path)
    assert str(refused.value) == message.format("data.seed, supernet.steps, supernet.num_random")
    for untouched in (settings(kind="train"), settings(supernet="elsewhere")):
        assert supernet_stage(untouched, STAGE, tmp_path / "other") == untouched
    assert not (tmp_path / "other").exists()


def test_a_diverged_stage_says_its_dir_must_go_before_other_options_train_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(supernet_job, "plot_learning_curve", lambda *args, **kwargs: None)  # (seconds)
    exploding = replace(settings(), trainer=replace(TRAINER, lr=1e3, clip_grad_norm=0.0, warmup_epochs=0.0))
    out = tmp_path / "supernet"
    with pytest.raises(TrainingDiverged) as failed:
        supernet_stage(exploding, STAGE, tmp_path)
    assert str(failed.value).endswith(f"; delete {out}, then rerun with a lower trainer.lr, "
                                      "trainer.clip_grad_norm set or other supernet.* options")
    differ = r"\(trainer.lr, trainer.warmup_epochs, trainer.clip_grad_norm differ\)"
    with pytest.raises(ConfigError, match=differ):
        supernet_stage(settings(), STAGE, tmp_path)  # what the old hint alone said to do: refused


def test_search_config_needs_no_supernet_dir_when_the_stage_trains_one():
    SearchConfig(proxy=ProxyConfig(kind="predictor")).validate()
    with pytest.raises(ConfigError, match="supernet.steps: must be an integer >= 1, got 0"):
        SearchConfig(proxy=ProxyConfig(kind="supernet"), supernet=SupernetStageConfig(steps=0)).validate()
    with pytest.raises(ConfigError, match="proxy.kind"):
        SearchConfig(proxy=ProxyConfig(kind="nope")).validate()
    # NetAdapt will score on the search's supernet: kinds of sub-networks, refused before the search
    width_kinds = NetAdaptConfig(kinds=["bottleneck"])
    for proxy in (ProxyConfig(kind="predictor"), ProxyConfig(kind="supernet", supernet="runs/supernet")):
        with pytest.raises(ConfigError, match=r"netadapt.kinds: \['bottleneck'\] must be a non-empty subset "
                                              "of exp, kernel, se, width, depth with netadapt.supernet"):
            SearchConfig(proxy=proxy, netadapt=width_kinds).validate()
        SearchConfig(proxy=proxy, netadapt=width_kinds, refine=False).validate()
    SearchConfig(proxy=ProxyConfig(kind="train"), netadapt=width_kinds).validate()


def test_main_job_with_a_supernet_trains_it_searches_on_it_and_refines_from_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 1)  # one torch thread: tiny networks, busy cores
    cfg = SearchConfig(
        space=SPACE, data=DATA, trainer=TRAINER, supernet=STAGE, export=False,
        proxy=ProxyConfig(kind="supernet", calib_batches=1, val_subset=32, train_subset=64),
        latency=LatencyConfig(runs=2, warmup=1, fit_rounds=1, auto_fit=False, tables_dir=str(tmp_path / "t")),
        netadapt=NetAdaptConfig(target_ratio=0.9, delta_ratio=0.05, final_steps=2),
        study=StudyConfig(name="tiny", n_trials=3, n_startup_trials=2, workers=1))
    cfg.validate()
    run = tmp_path / "run"
    report = run_pipeline(prepare_search(replace(cfg, results=replace(cfg.results, reference_points=False))),
                          run)
    assert report.winner is not None and (run / "supernet" / "supernet.json").is_file()
    history = json.loads((run / "refine" / "history.json").read_text())
    assert len(history) >= 2
    refined = json.loads((run / "refine" / "summary.json").read_text())
    assert refined["provenance"]["scorer"] == f"supernet:{run / 'supernet'}"
    assert refined["budget"]["final_steps"] == 2
