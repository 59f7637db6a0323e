"""A NaN recipe: training that diverges stops, says ``diverged``, exits 1 and saves no weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from evaluators.data import DataConfig, load_dataset
from evaluators.training import CHECKPOINT, DIVERGED, TrainConfig, fit
from evaluators.training.trainer import MAX_LOSS, MAX_WEIGHT
from search.cli import main
from search.netadapt.refine import trainer_hooks
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(from_string(TINY))


def quick(**changes) -> TrainConfig:
    """The default recipe (RMSProp, gradient clipping), shortened to a few steps."""
    base = TrainConfig(steps=6, batch_size=16, progress=False, eval_every=3, checkpoint_every=3)
    return base.replace(**changes)


class Sabotaged(nn.Module):
    """Wraps a model: NaN logits in eval mode (``nan_eval``), or an unused weight set to ``spare`` in
    training; the training loss stays finite either way."""

    def __init__(self, inner: nn.Module, *, nan_eval: bool = False, spare: float = 0.0) -> None:
        super().__init__()
        self.inner, self.nan_eval, self.value = inner, nan_eval, spare
        self.spare = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            with torch.no_grad():
                self.spare.fill_(self.value)
            return out
        return out * math.nan if self.nan_eval else out


def test_absurd_learning_rate_diverges_and_checkpoints_no_exploded_weights(data, tmp_path):
    evaluations = []
    result = fit(tiny_model(), data, quick(lr=1e3), checkpoint_dir=tmp_path,
                 on_eval=lambda step, r: evaluations.append(step))
    assert result.status == DIVERGED and not result.ok and result.top1 == 0.0 and math.isnan(result.loss)
    assert "training loss is" in result.message and f"(limit {MAX_LOSS:g})" in result.message
    assert evaluations == []  # the diverged evaluation is never reported (e.g. to a pruner)
    assert result.history and result.history[-1]["train_loss"] > MAX_LOSS
    assert not (tmp_path / CHECKPOINT).exists()  # its first one (step 3) would hold the exploded weights


def test_nan_validation_loss_alone_is_divergence(data):
    result = fit(Sabotaged(tiny_model(), nan_eval=True), data, quick(ema_decay=0.0, bn_recalibrate=0))
    assert result.status == DIVERGED and "validation loss is nan at step 3" in result.message
    assert result.steps == 3 and math.isnan(result.history[-1]["val_loss"])


def test_exploding_weights_with_finite_losses_are_divergence(data):
    result = fit(Sabotaged(tiny_model(), spare=10 * MAX_WEIGHT), data, quick())
    assert result.status == DIVERGED and result.steps == 3
    assert f"weights exploded at step 3 (largest |w| 1e+07, limit {MAX_WEIGHT:g})" in result.message
    assert math.isfinite(result.history[-1]["train_loss"]) and math.isfinite(result.history[-1]["val_loss"])
    healthy = fit(Sabotaged(tiny_model(), spare=MAX_WEIGHT / 10), data, quick())
    assert healthy.ok and healthy.steps == 6


def test_netadapt_scores_a_diverged_fine_tune_as_nan_so_it_ranks_last(data):
    fine_tune, evaluate = trainer_hooks(data, quick(lr=1e3), lr_scale=1.0)
    assert math.isnan(evaluate(fine_tune(tiny_model(), 3)))
    fine_tune, evaluate = trainer_hooks(data, quick(), lr_scale=1.0)
    assert 0 <= evaluate(fine_tune(tiny_model(), 3)) <= 1


def test_train_command_with_absurd_lr_fails_with_exit_1_and_saves_no_weights(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as caught:
        main(["train", f"arch='{TINY}'", "data.num_classes=3", "data.train_size=60", "data.test_size=12",
              "data.val_size=12", "trainer.steps=6", "trainer.batch_size=16", "trainer.eval_every=3",
              "trainer.progress=false", "trainer.lr=1e3", f"hydra.run.dir={run_dir}"])
    assert caught.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("failed: training diverged: training loss is")
    assert "lower trainer.lr" in err[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["top1"] == 0.0
    assert not (run_dir / "weights.safetensors").exists()
