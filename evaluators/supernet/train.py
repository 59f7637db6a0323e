"""Supernet training: BigNAS's sandwich rule with in-place distillation, OFA's progressive shrinking.

One step trains, on one batch, the largest sub-network, the smallest and ``num_random`` random
ones (duplicates dropped), the largest first: its soft labels (detached) teach the others. Their
gradients are summed, then one optimizer step. Everything else is the trainer's
(:class:`~evaluators.training.trainer.TrainingRun`): schedule, clipping, AMP on CUDA, EMA,
atomic checkpoints with exact resume, divergence handling, progress bar.

The random sub-networks of step ``s`` are drawn from ``random.Random(seed, s)`` (the trainer's
seed), so a resumed run draws exactly the sub-networks of an uninterrupted one with no generator
state to save. Each evaluation re-estimates the batch-norm statistics of, then validates, the
largest, the smallest and the space's seed sub-network; the history gets one column pair per size
(``largest_top1``, ``largest_loss``, ...), the ``val_*`` columns being the largest's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F

from evaluators.data import DatasetSplits
from evaluators.supernet.config import PHASES, SupernetTrainConfig
from evaluators.supernet.network import ALL_DIMS, SuperNet, draw_spec
from evaluators.supernet.rundir import describe_space
from evaluators.supernet.scoring import reestimate_batchnorm
from evaluators.training import TrainConfig, TrainResult
from evaluators.training.metrics import EvalResult, autocast_context
from evaluators.training.trainer import EvalCallback, TrainingRun, train_run
from search_spaces.errors import ConfigError
from search_spaces.spec import ArchSpec

SIZES = ("largest", "smallest", "seed")  # the sub-networks of the learning curves
# What is elastic in each phase of progressive shrinking; the last phase frees the rest of the space.
ELASTIC = {"full": frozenset(), "kernel": frozenset({"kernel"}), "depth": frozenset({"kernel", "depth"}),
           "expansion": ALL_DIMS}
SORT_PHASE = "expansion"  # channels are re-sorted by importance when channel counts become elastic


def phase_ends(phases: Sequence[float], total: int) -> list[int]:
    """The step at which each phase of progressive shrinking ends (the last one: ``total``)."""
    ends = [round(sum(phases[:i + 1]) * total) for i in range(len(phases))]
    ends[-1] = total
    return ends


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mode: str) -> torch.Tensor:
    """KL(teacher || student) (``kl``) or the cross-entropy with the teacher's soft labels (``soft_ce``)."""
    log_student = F.log_softmax(student.float(), dim=1)
    log_teacher = F.log_softmax(teacher.float(), dim=1)
    if mode == "kl":
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return -(log_teacher.exp() * log_student).sum(dim=1).mean()


class SupernetRun(TrainingRun):
    """A :class:`TrainingRun` whose step is a sandwich of sub-networks and whose evaluation scores
    each size of :data:`SIZES`. ``model`` is a :class:`~evaluators.supernet.SuperNet`.

    Under torchrun the sandwich runs through ``forward_spec``, which DDP does not see: gradients are
    averaged by hand after the sandwich (every rank trains the same sub-networks on its shard)."""

    ddp_wrap = False

    def __init__(self, net: SuperNet, data: DatasetSplits, cfg: TrainConfig, eval_split: str,
                 settings: SupernetTrainConfig) -> None:
        super().__init__(net, data, cfg, eval_split)
        self.net: SuperNet = net
        self.settings, self.space = settings, net.space
        self.largest, self.smallest = net.largest(), net.smallest()
        self.largest_params = self.space.params_of(self.largest)
        self.sizes = {"largest": self.largest, "smallest": self.smallest, "seed": self.space.seed}
        self.ends = phase_ends(settings.phases, self.total)
        self._bounded: dict[frozenset[str], ArchSpec] = {}
        self.identity["supernet"] = {**settings.to_dict(), "space": describe_space(self.space)}

    # --- what is trained at a step ----------------------------------------------------
    def phase(self, step: int) -> str:
        """The phase of progressive shrinking at ``step`` (``expansion``, all elastic, when off)."""
        if not self.settings.progressive_shrinking:
            return PHASES[-1]
        return next((name for name, end in zip(PHASES, self.ends, strict=True) if step < end), PHASES[-1])

    def bounded(self, elastic: frozenset[str]) -> ArchSpec:
        """The smallest sub-network whose ``elastic`` dimensions vary (the others the largest's); built
        once per phase."""
        if elastic not in self._bounded:
            self._bounded[elastic] = self.smallest if elastic == ALL_DIMS else self._smallest_with(elastic)
        return self._bounded[elastic]

    def _smallest_with(self, elastic: frozenset[str]) -> ArchSpec:
        params = dict(self.largest_params)
        for stage in self.space.stages:
            prefix = f"s{stage.index}"
            if "depth" in elastic:
                params[f"{prefix}.depth"] = min(stage.depths)
            if "kernel" in elastic:
                smallest = min(self.space.kernels)
                params.update({f"{prefix}.b{j}.kernel": smallest for j in range(max(stage.depths))})
        return self.space.spec_from_params(params)

    def sandwich(self, step: int) -> list[ArchSpec]:
        """The sub-networks of ``step``: the largest, then the smallest and the random ones, each once."""
        elastic = ELASTIC[self.phase(step)]
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        drawn = [draw_spec(self.space, rng, elastic, self.largest_params)
                 for _ in range(self.settings.num_random)]
        return list(dict.fromkeys([self.largest, self.bounded(elastic), *drawn]))

    # --- one step ---------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if self.settings.progressive_shrinking and self.step == self.sort_step():
            self.sort_channels()
        return super().train_step(images, labels)

    def sort_step(self) -> int:
        return ([0, *self.ends][PHASES.index(SORT_PHASE)])

    def sort_channels(self) -> None:
        """Re-order channels by importance; the optimizer's per-weight state no longer matches the
        weights, so it restarts, and the EMA restarts from the sorted weights."""
        self.net.sort_channels()
        self.optimizer.state.clear()
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())

    def backward(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Back-propagate every sub-network of the sandwich; the mean of their losses (the first
        non-finite one, and nothing more back-propagated, when one is not finite)."""
        teacher: torch.Tensor | None = None
        losses: list[float] = []
        for spec in self.sandwich(self.step):
            with autocast_context(self.device, self.amp_dtype):
                logits = self.net.forward_spec(images, spec)
                if teacher is None or self.settings.distill == "off":
                    loss = self.criterion(logits, labels)
                else:
                    loss = distillation_loss(logits, teacher, self.settings.distill)
                loss = loss * self.loss_weight
            value = self.global_loss(loss)
            if not math.isfinite(value):
                return value
            if teacher is None:
                teacher = logits.detach()
            self.scaler.scale(loss).backward()
            losses.append(value)
        return sum(losses) / len(losses)

    # --- one evaluation ---------------------------------------------------------------
    def validate(self) -> tuple[EvalResult, dict[str, float]]:
        """Each size's top-1 and loss after re-estimating its batch-norm statistics; the largest's result."""
        net, count = cast(SuperNet, self.final_model), self.cfg.bn_recalibrate
        results: dict[str, EvalResult] = {}
        for name, spec in self.sizes.items():
            reestimate_batchnorm(net, spec, self.calibration_loader, num_batches=count,
                                 amp_dtype=self.amp_dtype)
            results[name] = self.measure(net)
        extra = {f"{name}_{key}": getattr(result, key) for name, result in results.items()
                 for key in ("top1", "loss")}
        return results["largest"], extra


def size_history(history: Sequence[dict[str, float]], size: str) -> list[dict[str, float]]:
    """The history with ``size``'s validation figures as ``val_top1``/``val_loss`` (for learning curves)."""
    return [{**row, "val_top1": row[f"{size}_top1"], "val_loss": row[f"{size}_loss"]} for row in history]


def train_supernet(net: SuperNet, data: DatasetSplits, cfg: TrainConfig, settings: SupernetTrainConfig, *,
                   eval_split: str = "val", checkpoint_dir: str | Path | None = None,
                   resume: bool = False,
                   on_eval: EvalCallback | None = None) -> TrainResult:
    """Train the supernet ``net`` in place, as :func:`~evaluators.training.fit` trains a network.

    Same arguments, checkpoints, resume and divergence handling as ``fit``; ``settings`` builds each
    step's sandwich. The result's ``top1``/``loss`` are the largest sub-network's; its history has
    the figures of every size of :data:`SIZES`. ``cfg.bn_recalibrate`` (>= 1) batches re-estimate
    each size's batch-norm statistics before it is validated."""
    cfg.validate()
    settings.validate()
    if cfg.bn_recalibrate < 1:
        raise ConfigError("trainer.bn_recalibrate: the supernet re-estimates each sub-network's batch-norm "
                          f"statistics before validating it; must be >= 1, got {cfg.bn_recalibrate}")
    run = SupernetRun(net, data, cfg, eval_split, settings)
    return train_run(run, checkpoint_dir=checkpoint_dir, resume=resume, on_eval=on_eval)
