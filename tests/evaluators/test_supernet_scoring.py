"""Scoring sub-networks of a supernet (batch-norm re-estimation, top-1, cache) and its run directory."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
import random

import pytest
import torch

from evaluators.supernet import SuperNet, load_supernet, reestimate_batchnorm, save_supernet, score_subnet
from evaluators.supernet.rundir import MANIFEST, MAX_MANIFEST_BYTES, WEIGHTS
from evaluators.supernet.scoring import calibration_batches
from evaluators.training.metrics import recalibrate_batchnorm
from search_spaces.errors import DataError
from search_spaces.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def space(tiny_space) -> SearchSpace:
    return tiny_space


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data


@pytest.fixture
def net(space) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(space).eval()


def norm_state(net: SuperNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def test_reestimation_changes_the_statistics_deterministically_for_a_seed(net, data):
    spec = net.smallest()
    before = norm_state(net)
    states = []
    for seed in (0, 0, 1):
        reestimate_batchnorm(net, spec, calibration_batches(data, batch_size=32, seed=seed), num_batches=2)
        states.append(norm_state(net))
    assert net.active == spec and not net.training
    first_bn = "stages.0.0.dw_bn.running_mean"
    assert not torch.equal(states[0][first_bn], before[first_bn])
    assert all(torch.equal(states[0][k], states[1][k]) for k in before)
    assert not torch.equal(states[0][first_bn], states[2][first_bn])


def test_reestimated_statistics_are_those_of_the_extracted_network(net, data):
    spec = net.sample(random.Random(0))
    batches = list(itertools.islice(calibration_batches(data, batch_size=32, seed=3), 3))
    reference = net.extract(spec)
    recalibrate_batchnorm(reference, batches)
    reestimate_batchnorm(net, spec, iter(batches), num_batches=3)
    mine = net.extract(spec).state_dict()
    for key, value in reference.state_dict().items():
        if "running" in key:
            assert torch.allclose(mine[key], value, atol=1e-5, rtol=1e-5), key


def test_a_score_is_reproducible_cached_and_leaves_the_supernet_as_it_was(net, data):
    spec = net.smallest()
    before = norm_state(net)
    first = score_subnet(net, spec, data, calib_batches=2, batch_size=32)
    assert 0.0 <= first.top1 <= 1.0 and first.count == len(data.val) and not first.cached
    after = norm_state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.active == net.largest() and not net.training
    again = score_subnet(net, spec, data, calib_batches=2, batch_size=32)
    assert again.cached and again.top1 == first.top1
    other_data = dataclasses.replace(data)  # another data set object: scored afresh
    assert not score_subnet(net, spec, other_data, calib_batches=2, batch_size=32).cached
    # another supernet object with the same weights computes the same score afresh
    twin = SuperNet(net.space).eval()
    twin.load_state_dict(net.state_dict())
    fresh = score_subnet(twin, spec, data, calib_batches=2, batch_size=32)
    assert not fresh.cached and fresh.top1 == first.top1 and fresh.loss == pytest.approx(first.loss, abs=1e-6)


def test_changed_weights_are_scored_again(net, data):
    spec = net.smallest()
    first = score_subnet(net, spec, data, calib_batches=1, batch_size=32)
    with torch.no_grad():
        net.head.classifier.weight.mul_(-1.0)
    second = score_subnet(net, spec, data, calib_batches=1, batch_size=32)
    assert not second.cached and second.loss != first.loss


def test_save_and_load_give_the_same_outputs(net, data, tmp_path):
    reestimate_batchnorm(net, net.smallest(), calibration_batches(data, batch_size=32, seed=0), num_batches=1)
    record = {"data": {"name": "synthetic", "num_classes": 4}, "status": "ok", "history": [{"step": 1}]}
    save_supernet(tmp_path, net, record=record)
    loaded, loaded_record = load_supernet(tmp_path)
    assert loaded_record == record and loaded.space == net.space and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for spec in (net.largest(), net.smallest()):
            assert torch.equal(loaded.forward_spec(x, spec), net.forward_spec(x, spec))


@pytest.fixture
def saved(net, tmp_path):
    save_supernet(tmp_path, net, record={"data": {}})
    return tmp_path


def _manifest(root):
    return json.loads((root / MANIFEST).read_text())


def test_a_directory_that_is_not_a_supernet_run_is_refused(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match=MANIFEST):
        load_supernet(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else", "record": {}}))
    with pytest.raises(DataError, match="not a supernet run manifest"):
        load_supernet(tmp_path)


@pytest.mark.parametrize("choice", [("widths", [0.75, 1.0, 1.25]), ("depth_deltas", [-1, 0])])
def test_weights_of_another_space_are_refused(saved, choice):
    manifest = _manifest(saved)
    manifest["space"][choice[0]] = choice[1]  # wider layers; fewer blocks
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"{WEIGHTS}.*(do not fit|more than)"):
        load_supernet(saved)


@pytest.mark.parametrize("damage", ["pickle", "oversized", "symlink", "huge_manifest", "bad_space"])
def test_hostile_files_are_refused(saved, tmp_path_factory, damage):
    weights = saved / WEIGHTS
    if damage == "pickle":  # a torch pickle under the safetensors name is never unpickled
        weights.write_bytes(pickle.dumps({"stem.0.weight": torch.zeros(1)}))
        expected = "not a readable safetensors file"
    elif damage == "oversized":
        with weights.open("ab") as handle:
            handle.truncate(weights.stat().st_size + 2 * 2**20)
        expected = "more than"
    elif damage == "symlink":
        elsewhere = tmp_path_factory.mktemp("elsewhere") / "w.safetensors"
        weights.rename(elsewhere)
        weights.symlink_to(elsewhere)
        expected = "symbolic link"
    elif damage == "huge_manifest":
        with (saved / MANIFEST).open("ab") as handle:
            handle.truncate(MAX_MANIFEST_BYTES + 1)
        expected = "over the"
    else:
        manifest = _manifest(saved)
        manifest["space"]["depth_deltas"] = [0, 0.5]
        (saved / MANIFEST).write_text(json.dumps(manifest))
        expected = "depth_deltas"
    with pytest.raises(DataError, match=expected) as info:
        load_supernet(saved)
    assert "\n" not in str(info.value)
