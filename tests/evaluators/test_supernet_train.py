from __future__ import annotations

import copy

import pytest
import torch

from evaluators.data import DataConfig, load_dataset
from evaluators.supernet import SuperNet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.train import SupernetRun, distillation_loss, train_supernet
from evaluators.training import CHECKPOINT, DIVERGED, TrainConfig, load_checkpoint
from search_spaces.blockstring import from_string
from search_spaces.errors import ConfigError, DataError
from search_spaces.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"


@pytest.fixture(scope="module")
def tiny_space() -> SearchSpace:
    return SearchSpace(from_string(TINY), widths=(0.75, 1.0), expansions=(0.5, 1.0))


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32))


def supernet(space: SearchSpace, seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    return SuperNet(space)


def quick(**changes) -> TrainConfig:
    base = TrainConfig(steps=8, batch_size=16, lr=0.005, warmup_epochs=0.25, progress=False, eval_every=2,
                       checkpoint_every=4, bn_recalibrate=1)
    return base.replace(**changes)


class Interrupted(Exception):
    pass


def test_killed_then_resumed_supernet_run_ends_with_the_uninterrupted_weights(tiny_space, data, tmp_path):
    # progressive shrinking: phases end at steps 2, 4, 6, 8; channels are sorted when step 5 begins
    settings = SupernetTrainConfig(num_random=1, progressive_shrinking=True)
    cfg = quick(ema_decay=0.5)
    reference = supernet(tiny_space)
    full = train_supernet(reference, data, cfg, settings, checkpoint_dir=tmp_path / "full")

    def kill_at_step_6(step, _):
        if step == 6:  # the last checkpoint is at step 4: steps 5 and 6 (the sort among them) are redone
            raise Interrupted

    with pytest.raises(Interrupted):
        train_supernet(supernet(tiny_space), data, cfg, settings, checkpoint_dir=tmp_path / "cut",
                       on_eval=kill_at_step_6)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 4
    resumed_net = supernet(tiny_space, seed=123)  # other initial weights: the checkpoint must win
    resumed = train_supernet(resumed_net, data, cfg, settings, checkpoint_dir=tmp_path / "cut", resume=True)

    assert full.ok and resumed.ok and resumed.steps == 8
    expected, got = reference.state_dict(), resumed_net.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert {"largest_top1", "smallest_top1", "seed_top1", "smallest_loss"} <= full.history[-1].keys()

    other = SupernetTrainConfig(num_random=2, progressive_shrinking=True)
    with pytest.raises(DataError, match=r"written for another run \(supernet: .*'num_random': 1"):
        train_supernet(supernet(tiny_space), data, cfg, other, checkpoint_dir=tmp_path / "cut", resume=True)


def test_the_sandwich_is_largest_smallest_and_n_random_sub_networks(tiny_space, data):
    net = supernet(tiny_space)
    run = SupernetRun(net, data, quick(), "val", SupernetTrainConfig(num_random=3))
    first = run.sandwich(0)
    assert first[:2] == [net.largest(), net.smallest()] and len(set(first)) == 5
    assert all(tiny_space.contains(spec) for spec in first)
    assert run.sandwich(0) == first and run.sandwich(1) != first  # drawn from (seed, step) only

    settings = SupernetTrainConfig(num_random=3, progressive_shrinking=True)
    shrinking = SupernetRun(net, data, quick(), "val", settings)
    phases = ["full"] * 2 + ["kernel"] * 2 + ["depth"] * 2 + ["expansion"] * 2
    assert [shrinking.phase(s) for s in range(8)] == phases
    assert shrinking.sandwich(0) == [net.largest()]
    largest = tiny_space.params_of(net.largest())
    for spec in shrinking.sandwich(2)[1:]:  # only kernels vary in the kernel phase
        params = tiny_space.params_of(spec)
        assert {k for k in params if params[k] != largest[k]} and all(
            k.endswith(".kernel") for k in params if params[k] != largest[k])
    assert tiny_space.params_of(shrinking.sandwich(2)[1])["s0.b0.kernel"] == 3


def touched_parameters(net: SuperNet, spec, images, labels) -> set[str]:
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net.forward_spec(images, spec), labels).backward()
    return {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@torch.no_grad()
def batch_loss(net: SuperNet, spec, images, labels) -> float:
    torch.manual_seed(0)  # the same dropout mask every time
    return float(torch.nn.functional.cross_entropy(net.forward_spec(images, spec), labels))


def test_the_sandwich_trains_the_smaller_sub_networks_and_their_loss_falls(tiny_space, data):
    net = supernet(tiny_space)
    images, labels = next(iter(data.loader("train", 64)))
    only_small = touched_parameters(net, net.smallest(), images, labels) - \
        touched_parameters(net, net.largest(), images, labels)
    assert only_small  # e.g. the kernel transformations of the 5x5 and 3x3 kernels
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    losses = {size: batch_loss(net, spec, images, labels) for size, spec in (("largest", net.largest()),
                                                                            ("smallest", net.smallest()))}
    result = train_supernet(net, data, quick(lr=0.02, eval_every=8, checkpoint_every=0),
                            SupernetTrainConfig(num_random=1, distill="off"))
    after = dict(net.named_parameters())
    assert result.ok and all(not torch.equal(before[name], after[name]) for name in only_small)
    assert batch_loss(net, net.smallest(), images, labels) < losses["smallest"] - 0.03  # 1.385 -> 1.319
    assert batch_loss(net, net.largest(), images, labels) < losses["largest"] - 0.01  # 1.386 -> 1.351


def test_distillation_changes_the_students_loss_not_their_gradients_between_kl_and_soft_ce(tiny_space, data):
    teacher = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    entropy = float(-(teacher.softmax(1) * teacher.log_softmax(1)).sum())
    assert float(distillation_loss(teacher, teacher, "kl")) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(teacher, teacher, "soft_ce")) == pytest.approx(entropy)

    net = supernet(tiny_space)
    images, labels = next(iter(data.loader("train", 16)))
    losses, grads = {}, {}
    for mode in ("off", "kl", "soft_ce"):
        copied = copy.deepcopy(net)
        run = SupernetRun(copied, data, quick(), "val", SupernetTrainConfig(num_random=2, distill=mode))
        torch.manual_seed(7)  # the same dropout masks in every mode
        losses[mode] = run.backward(images, labels)
        grads[mode] = {name: p.grad.clone() for name, p in copied.named_parameters() if p.grad is not None}
    assert len({losses["off"], losses["kl"], losses["soft_ce"]}) == 3
    assert losses["soft_ce"] > losses["kl"]  # by the teacher's entropy, for each of the 3 students
    assert any(not torch.allclose(grads["off"][k], grads["kl"][k]) for k in grads["off"])
    assert grads["kl"].keys() == grads["soft_ce"].keys()
    for name in grads["kl"]:
        assert torch.allclose(grads["kl"][name], grads["soft_ce"][name], atol=1e-5), name


def test_a_diverging_supernet_run_stops_with_diverged_and_no_checkpoint(tiny_space, data, tmp_path):
    result = train_supernet(supernet(tiny_space), data, quick(lr=1e3, clip_grad_norm=0.0, warmup_epochs=0),
                            SupernetTrainConfig(), checkpoint_dir=tmp_path)
    assert result.status == DIVERGED and not result.ok and "loss is" in result.message
    assert not (tmp_path / CHECKPOINT).exists()


@pytest.mark.parametrize("settings, cfg, message", [
    (SupernetTrainConfig(num_random=-1), {}, "supernet.num_random: must be >= 0"),
    (SupernetTrainConfig(distill="mse"), {}, "supernet.distill: must be one of kl, soft_ce, off"),
    (SupernetTrainConfig(phases=[0.5, 0.5, 0.5]), {}, r"supernet.phases: 4 fractions"),
    (SupernetTrainConfig(), {"bn_recalibrate": 0}, "trainer.bn_recalibrate: the supernet re-estimates"),
])
def test_bad_settings_name_the_field(tiny_space, data, settings, cfg, message):
    with pytest.raises(ConfigError, match=message):
        train_supernet(supernet(tiny_space), data, quick(**cfg), settings)
