from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evaluators.data import DataConfig, load_dataset
from evaluators.training import (
    CHECKPOINT,
    DIVERGED,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from evaluators.training.schedule import lr_at
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(from_string(TINY))


def quick(**changes) -> TrainConfig:
    base = TrainConfig(steps=12, batch_size=16, optimizer="sgd", lr=0.05, warmup_epochs=0.5, progress=False,
                       eval_every=2, checkpoint_every=4, ema_decay=0.9, clip_grad_norm=5.0)
    return base.replace(**changes)


class Interrupted(Exception):
    pass


def test_killed_then_resumed_run_ends_with_the_uninterrupted_weights(data, tmp_path):
    reference = tiny_model()
    full = fit(reference, data, quick(), checkpoint_dir=tmp_path / "full")

    def kill_at_step_10(step, _):
        if step == 10:  # the last checkpoint is at step 8: steps 9 and 10 are lost and redone
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(tiny_model(), data, quick(), checkpoint_dir=tmp_path / "cut", on_eval=kill_at_step_10)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 8
    resumed_model = tiny_model(seed=123)  # different initial weights: the checkpoint must win
    resumed = fit(resumed_model, data, quick(), checkpoint_dir=tmp_path / "cut", resume=True)

    assert resumed.status == full.status == "completed" and resumed.steps == 12
    expected, got = reference.state_dict(), resumed_model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert (resumed.top1, resumed.top5) == (full.top1, full.top5)

    again = fit(tiny_model(seed=5), data, quick(), checkpoint_dir=tmp_path / "cut", resume=True)
    assert again.steps == 12 and again.top1 == full.top1  # a finished run resumes to its result


def test_resume_with_other_options_is_refused(data, tmp_path):
    fit(tiny_model(), data, quick(steps=4), checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match=r"other training options \(lr=0.05 -> 0.1, steps=4 -> 8\)"):
        fit(tiny_model(), data, quick(steps=8, lr=0.1), checkpoint_dir=tmp_path, resume=True)


def test_checkpoints_load_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "model": {}, "payload": Interrupted()}, path)
    with pytest.raises(DataError, match=r"evil.pt: not a readable checkpoint"):
        load_checkpoint(path)
    save_checkpoint({"step": 3, "model": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt", "ok.pt"]  # no temporary file left


class NaNAfter(nn.Module):
    """Wraps a model; from the given call on its logits are NaN."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        self.calls += 1 if self.training else 0
        out = self.inner(x)
        return out * math.nan if self.calls > self.after else out


def test_nan_loss_gives_diverged_status_not_an_exception(data):
    result = fit(NaNAfter(tiny_model(), after=3), data, quick(ema_decay=0.0, bn_recalibrate=0))
    assert result.status == DIVERGED and not result.ok
    assert result.steps == 3 and result.top1 == 0.0 and math.isnan(result.loss)
    assert "loss is nan at step 4" in result.message
    huge = fit(tiny_model(), data, quick(lr=1e30, clip_grad_norm=0.0, ema_decay=0.0, steps=8,
                                         warmup_epochs=0))
    assert huge.status == DIVERGED


def test_eval_callback_sees_every_validation_and_its_exceptions_propagate(data):
    seen = []
    result = fit(tiny_model(), data, quick(steps=6, eval_every=2, ema_decay=0.0),
                 on_eval=lambda step, r: seen.append((step, r.top1)))
    assert [s for s, _ in seen] == [2, 4, 6]
    assert all(0 <= top1 <= 1 for _, top1 in seen) and result.top1 == seen[-1][1]
    with pytest.raises(Interrupted):
        fit(tiny_model(), data, quick(steps=6), on_eval=lambda step, r: (_ for _ in ()).throw(Interrupted()))


def test_epoch_budget_and_rmsprop_step_schedule(data):
    cfg = quick(steps=None, epochs=2, optimizer="rmsprop", lr=0.01, schedule="step", eval_every=0,
                bn_recalibrate=2)
    result = fit(tiny_model(), data, cfg)
    assert result.ok and result.steps == 2 * (64 // 16) and result.epochs == 2.0
    assert [h["step"] for h in result.history] == [4, 8]


def test_evaluate_counts_top1_and_top5():
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6], [1.0, 9, 2, 3, 4, 5, 6], [9.0, 8, 7, 6, 5, 4, 3]])
    labels = torch.tensor([0, 0, 6])  # right; in the top 5 (rank 6 of 7? no: 1.0 is last); wrong
    model = nn.Linear(7, 7, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(7))
    result = evaluate(model, [(logits, labels)])
    assert result.top1 == pytest.approx(1 / 3) and result.top5 == pytest.approx(1 / 3) and result.count == 3
    result = evaluate(model, [(logits, torch.tensor([0, 6, 4]))])
    assert result.top1 == pytest.approx(1 / 3) and result.top5 == pytest.approx(1.0)


def test_learning_rate_schedules():
    cfg = TrainConfig(lr=1.0, warmup_epochs=1, warmup_start=0.1, schedule="cosine", min_lr_ratio=0.0)
    assert lr_at(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_at(5, 100, 10, cfg) == pytest.approx(0.55)
    assert lr_at(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, cfg) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, cfg) == pytest.approx(0.0)
    step = cfg.replace(schedule="step", warmup_epochs=0, step_every_epochs=2, step_gamma=0.5)
    assert [lr_at(s, 100, 10, step) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_bad_trainer_options_name_the_field(data):
    with pytest.raises(ConfigError, match=r"trainer.optimizer: must be one of sgd, rmsprop.*, got 'adam'"):
        fit(tiny_model(), data, quick(optimizer="adam"))
    with pytest.raises(ConfigError, match=r"trainer.ema_decay: must be in \[0, 1\)"):
        fit(tiny_model(), data, quick(ema_decay=1.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(data, amp):
    model = tiny_model()
    result = fit(model, data, quick(amp=amp, device="cuda", steps=6))
    assert result.ok and next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32  # autocast, weights stay fp32


@pytest.mark.parametrize("preset", ["fast", "sgd", "v3_recipe"])
def test_trainer_presets_are_valid(preset):
    from search.schema import preset as load_preset

    load_preset("trainer", preset, TrainConfig, "trainer").validate()  # only TrainConfig's keys and types


def test_adamw_and_batchnorm_momentum_options():
    from torch import nn as _nn

    from evaluators.training.optim import make_optimizer, set_batchnorm_momentum
    from search_spaces.builder import build_model
    from search_spaces.reference import reference_spec

    model = build_model(reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=4, resolution=32))
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", lr=3e-3, weight_decay=1e-4))
    assert type(optimizer).__name__ == "AdamW"
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]
    set_batchnorm_momentum(model, 0.1)
    assert {m.momentum for m in model.modules() if isinstance(m, _nn.BatchNorm2d)} == {0.1}
    with pytest.raises(ConfigError, match=r"trainer.bn_momentum: must be in \(0, 1\] or null"):
        TrainConfig(bn_momentum=0.0).validate()
