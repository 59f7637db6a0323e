"""A search whose accuracy signal is a trained supernet (proxy=supernet / proxy=predictor)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from optuna.trial import TrialState

from evaluators.accuracy import ProxyConfig
from evaluators.data import DataConfig, load_dataset
from evaluators.latency import LatencyConfig
from evaluators.supernet import SuperNet, save_supernet, score_subnet
from search.components import SearchSettings, build_components
from search.objectives import ObjectiveConfig
from search.runner import run_search
from search.study import StudyConfig
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = SpaceConfig(seed="mobilenet_v3_small", depth_deltas=[0], widths=[0.75, 1.0], kernels=[3, 5],
                    expansions=[0.5, 1.0])
DATA = DataConfig(train_size=128, test_size=32, val_size=64)


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory):
    data = load_dataset(DATA)
    space = build_space(SPACE, num_classes=data.num_classes, resolution=data.resolution,
                        in_channels=data.in_channels)
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("supernet")
    save_supernet(run, SuperNet(space), record={"data": data.summary()})
    return run


def settings(supernet_dir, tables, *, kind: str = "supernet", mode: str = "soft",
             space: SpaceConfig = SPACE, reference_points: bool = False) -> SearchSettings:
    return SearchSettings(
        space=space, data=DATA,
        proxy=ProxyConfig(kind=kind, supernet=str(supernet_dir), calib_batches=1, val_subset=32,
                          predictor_samples=10),
        latency=LatencyConfig(runs=2, warmup=1, fit_rounds=1, auto_fit=False, tables_dir=str(tables)),
        objective=ObjectiveConfig(mode=mode), reference_points=reference_points)


@pytest.mark.parametrize(("kind", "mode"),
                         [("supernet", "soft"), ("supernet", "hard"), ("predictor", "pareto")])
def test_every_objective_searches_on_supernet_scores(supernet_dir, tmp_path_factory, tmp_path, kind, mode):
    tables = tmp_path_factory.getbasetemp() / "tables"  # shared: layers are timed once
    components = build_components(settings(supernet_dir, tables, kind=kind, mode=mode))
    study = run_search(lambda: components, StudyConfig(name=mode, n_trials=5, n_startup_trials=2),
                       f"sqlite:///{tmp_path}/s.db", components=components, progress=False)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 5
    evaluator = components.accuracy
    for trial in done[:2]:
        spec = components.space.spec_from_params(trial.params)
        measured = score_subnet(evaluator.net, spec, evaluator.data, calib_batches=1, batch_size=256).top1
        if kind == "predictor":  # predicted, unless among the top predictions so far: then measured
            predicted = evaluator.predictor.predict([spec])[0]
            assert trial.user_attrs["proxy_predicted"] == pytest.approx(predicted)
            if not trial.user_attrs["proxy_confirmed"]:
                measured = trial.user_attrs["proxy_predicted"]
        assert trial.user_attrs["accuracy"] == pytest.approx(measured)


def test_only_references_of_the_supernets_space_are_plotted(supernet_dir, tmp_path):
    components = build_components(settings(supernet_dir, tmp_path, reference_points=True))
    assert list(components.references) == ["mobilenet_v3_small"]  # the seed; V3-Large is not a sub-network
    assert components.space.contains(components.references["mobilenet_v3_small"])


def test_a_search_of_another_space_than_the_supernets_is_refused(supernet_dir, tmp_path):
    other = SpaceConfig(seed="mobilenet_v3_small", depth_deltas=[0], widths=[1.0], kernels=[3, 5],
                        expansions=[0.5, 1.0])
    with pytest.raises(ConfigError, match=r"proxy.supernet: .*widths \[1.0\] vs \[0.75, 1.0\]"):
        build_components(settings(supernet_dir, tmp_path, space=other))


def test_the_command_line_names_a_missing_supernet_directory(tmp_path):
    missing = tmp_path / "no_supernet"
    result = subprocess.run([sys.executable, "-m", "search", "search", "proxy=predictor",
                             f"proxy.supernet={missing}", f"hydra.run.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {missing}: supernet run dir not found" in result.stderr
