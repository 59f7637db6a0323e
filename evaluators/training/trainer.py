"""``fit``: train any ``nn.Module`` on a :class:`TrainingData`, resumable, never raising on NaN.

A run diverges (status ``diverged``, stopped at once) when a training loss is NaN or infinite, when
at an evaluation the mean training loss or the validation loss is not below :data:`MAX_LOSS`, or
when a weight is non-finite or above :data:`MAX_WEIGHT` in magnitude. Weights are checked at every
evaluation and before every checkpoint, so no checkpoint or result holds exploded weights.

The module is trained in place (NetAdapt passes networks with inherited weights). One run is a
fixed number of optimizer steps; the learning rate, the batch order and the augmentation of
every step depend only on the config, the seed and the step, and checkpoints hold the weights,
optimizer, scaler, EMA, RNG states and history, so a run killed and resumed from its checkpoint
ends with exactly the weights of an uninterrupted run (same device and thread count).

Under ``torchrun`` (:mod:`evaluators.training.distributed`) each process trains on its shard of
every global batch of ``cfg.batch_size`` images: gradients are averaged over the ranks (DDP, or by
hand for runs whose step calls no plain ``forward``), batch-norm running statistics averaged after
every step, metrics reduced over the ranks, divergence decided by rank 0 for all, and checkpoints,
progress bar and files written by rank 0 only. Batch norm normalizes each rank's shard on its own
(ghost batches of ``batch_size / world_size``) unless ``cfg.sync_bn`` (CUDA) normalizes the global
batch.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import evaluators.training.distributed as distributed
from evaluators.data import TrainingData
from evaluators.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from evaluators.training.config import RESUMABLE_CHANGES, TrainConfig
from evaluators.training.metrics import EvalResult, autocast_context, evaluate, recalibrate_batchnorm
from evaluators.training.optim import (
    make_ema,
    make_optimizer,
    resolve_amp,
    resolve_device,
    set_batchnorm_momentum,
)
from evaluators.training.schedule import lr_at
from search_spaces.errors import ConfigError, DataError

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1
COMPLETED, DIVERGED = "completed", "diverged"
# Bounds above which a run counts as diverged. A cross-entropy starts near ln(classes) (< 7 for 1000
# classes) and a poor or overfitted network stays within a few tens; 1e3 needs logits off by ~1e3.
# Trained MobileNetV3 weights (batch-norm scales included) stay below ~1e2; 1e6 is far above that.
MAX_LOSS = 1e3
MAX_WEIGHT = 1e6

EvalCallback = Callable[[int, EvalResult], None]


@dataclass
class TrainResult:
    """The outcome of :func:`fit`.

    ``status`` is ``completed`` or ``diverged`` (a NaN/inf or exploding training or validation
    loss, or exploded weights, stopped the run: ``top1`` and ``top5`` are then 0.0 and ``loss``
    NaN, ``message`` says why, and the module's weights are not usable).
    Accuracies are fractions in [0, 1], measured on the evaluation split with the final weights
    (the EMA weights when EMA is on)."""

    status: str
    top1: float
    top5: float
    loss: float
    steps: int
    total_steps: int
    epochs: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: ``cfg.steps`` when set, else epochs x steps per epoch."""
    return cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch


class TrainingRun:
    """The mutable state of one :func:`fit` call (what a checkpoint holds).

    Subclasses change what one step computes (:meth:`backward`) and what an evaluation measures
    (:meth:`validate`) and keep the rest: schedule, clipping, AMP, EMA, checkpoints with exact
    resume, divergence checks; :func:`train_run` drives any of them. ``ddp_wrap``: the step runs
    the model's ``forward`` (wrapped in DDP when distributed); False: gradients are averaged by hand."""

    ddp_wrap = True

    def __init__(self, model: nn.Module, data: TrainingData, cfg: TrainConfig, eval_split: str) -> None:
        self.model, self.data, self.cfg = model, data, cfg
        self.dist = distributed.context()
        if cfg.batch_size < self.dist.world_size:
            raise ConfigError(f"trainer.batch_size: the global batch ({cfg.batch_size}) must hold at least "
                              f"one image per process ({self.dist.world_size} started by torchrun)")
        self.device = distributed.resolve_device(cfg.device, self.dist) or resolve_device(cfg.device)
        self.amp_dtype, use_scaler = resolve_amp(cfg.amp, self.device)
        if distributed.check_sync_bn(cfg.sync_bn, self.device, self.dist):
            if not self.ddp_wrap:
                raise ConfigError("trainer.sync_bn: not available for this run (its batch norms are not "
                                  "plain BatchNorm layers); set trainer.sync_bn=false")
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # channels-last weights on every device: on the CPU, V3-Small and -Large train 1.6-1.9x faster than
        # with contiguous weights (benchmarks/training_throughput.py; 2.5-3x at 32x32 with batches of 256)
        model.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (stubs)
        shard = self.dist.shard
        self.train_loader = data.loader("train", cfg.batch_size, train=True, seed=cfg.seed,
                                        device=self.device, shard=shard)
        self.eval_loader = data.loader(eval_split, max(256, cfg.batch_size), device=self.device, shard=shard)
        # every rank re-estimates batch-norm statistics on the same whole batches: identical models
        self.calibration_loader = data.loader("train", cfg.batch_size, device=self.device)
        self.loss_weight = 1.0  # this rank's share of the global batch x world size
        self.steps_per_epoch = len(self.train_loader)
        self.total = budget_steps(cfg, self.steps_per_epoch)
        set_batchnorm_momentum(model, cfg.bn_momentum)
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.ema = make_ema(model, cfg.ema_decay)
        self.forward_model: nn.Module = model
        if self.dist.enabled:
            self.dist.broadcast_module(model)
            if self.ddp_wrap:
                self.forward_model = distributed.wrap_ddp(model, self.device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.identity = {"eval_split": eval_split, "steps_per_epoch": self.steps_per_epoch,
                         "data": {k: v for k, v in data.summary().items() if isinstance(v, (int, str))}}
        self.step, self.seconds, self.loss_sum, self.loss_count = 0, 0.0, 0.0, 0
        self.history: list[dict[str, float]] = []

    @property
    def final_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # --- checkpoints ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint's content (a collective when distributed: every rank's RNG states)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step, "seconds": self.seconds,
            "loss_sum": self.loss_sum, "loss_count": self.loss_count, "history": self.history,
            "config": self.cfg.to_dict(), "identity": self.identity, "rng": rng,
            "rank_rng": self.dist.gather(rng) if self.dist.enabled else None,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        saved = {**TrainConfig().to_dict(), **state.get("config", {})}  # options added since: defaults
        saved = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES}
        now = {k: v for k, v in self.cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
        changed = sorted(k for k in now if saved.get(k) != now[k])
        if changed:
            shown = ", ".join(f"{k}={saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise DataError(f"{path}: the checkpoint was written with other training options ({shown}); "
                            "resume with the same options or start a new run")
        saved_identity = state.get("identity")
        if saved_identity != self.identity:
            saved_identity = saved_identity if isinstance(saved_identity, dict) else {}
            differs = sorted(k for k in {*saved_identity, *self.identity}
                             if saved_identity.get(k) != self.identity.get(k))
            shown = "; ".join(f"{k}: {saved_identity.get(k)!r} -> {self.identity.get(k)!r}" for k in differs)
            raise DataError(f"{path}: the checkpoint was written for another run ({shown}); resume with "
                            "the same data, splits and settings or start a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        ranks = state.get("rank_rng")
        if self.dist.enabled and isinstance(ranks, list) and len(ranks) == self.dist.world_size:
            rng = ranks[self.dist.rank]  # each rank's own dropout stream
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.loss_sum, self.loss_count = float(state["loss_sum"]), int(state["loss_count"])
        self.history = list(state["history"])
        log.info("resumed from %s at step %d/%d", path, self.step, self.total)

    # --- one step, one evaluation -----------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimizer step on the gradients of :meth:`backward`; a non-finite loss skips the step."""
        lr = lr_at(self.step, self.total, self.steps_per_epoch, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        value = self.backward(images, labels)
        if not math.isfinite(value):
            return value
        if not self.ddp_wrap:
            self.dist.average_gradients(self.model)
        if self.cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.dist.average_buffers(self.model)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        self.loss_sum += value
        self.loss_count += 1
        return value

    def backward(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accumulate the (scaled) gradients of this step's loss; returns the loss (the global batch's),
        not back-propagated when it is not finite."""
        with autocast_context(self.device, self.amp_dtype):
            loss = self.criterion(self.forward_model(images), labels) * self.loss_weight
        value = self.global_loss(loss)
        if math.isfinite(value):
            self.scaler.scale(loss).backward()
        return value

    def global_loss(self, loss: torch.Tensor) -> float:
        """The global batch's loss from this rank's weighted loss (the same value on every rank, so
        that all of them skip a non-finite step together)."""
        return float(self.dist.mean_tensor(loss.detach()))

    def measure(self, model: nn.Module) -> EvalResult:
        """``model`` evaluated on the whole evaluation split (each rank its shard, reduced)."""
        return self.dist.reduce_eval(evaluate(model, self.eval_loader, amp_dtype=self.amp_dtype))

    def validate(self) -> tuple[EvalResult, dict[str, float]]:
        """The evaluation that decides divergence and ``on_eval``, and extra history columns."""
        if self.cfg.bn_recalibrate > 0:
            batches = itertools.islice(self.calibration_loader, self.cfg.bn_recalibrate)
            recalibrate_batchnorm(self.final_model, batches, amp_dtype=self.amp_dtype)
        return self.measure(self.final_model), {}

    def evaluate(self, elapsed: float) -> EvalResult:
        result, extra = self.validate()
        train_loss = self.loss_sum / max(1, self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        lr = lr_at(max(0, self.step - 1), self.total, self.steps_per_epoch, self.cfg)
        self.history.append({
            "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "lr": lr,
            "train_loss": train_loss, "val_loss": result.loss, "val_top1": result.top1,
            "val_top5": result.top5, "seconds": round(elapsed, 3), **extra,
        })
        log.info("epoch %.2f step %d/%d lr %.4g train loss %.4f | %s top1 %.2f%% top5 %.2f%% loss %.4f "
                 "| %.1fs", self.step / self.steps_per_epoch, self.step, self.total, lr, train_loss,
                 self.identity["eval_split"], 100 * result.top1, 100 * result.top5, result.loss, elapsed)
        return result

    def divergence(self, result: EvalResult | None) -> str:
        """Why the run has diverged at this step ("" when it has not): after an evaluation (``result``),
        a mean training or a validation loss not below :data:`MAX_LOSS`; always, a weight that is
        non-finite or above :data:`MAX_WEIGHT` in magnitude."""
        losses = {}
        if result is not None:
            losses["training"] = self.history[-1]["train_loss"]
            if result.count:
                losses["validation"] = result.loss
        for name, loss in losses.items():
            if not loss < MAX_LOSS:  # also true for NaN
                return f"{name} loss is {loss:.4g} at step {self.step} (limit {MAX_LOSS:g})"
        largest = self.largest_weight()
        if not largest <= MAX_WEIGHT:  # also true for NaN
            return f"weights exploded at step {self.step} (largest |w| {largest:.3g}, limit {MAX_WEIGHT:g})"
        return ""

    def agreed_divergence(self, result: EvalResult | None) -> str:
        """:meth:`divergence` as rank 0 decides it, on every rank."""
        return self.dist.broadcast(self.divergence(result))

    def save(self, path: Path) -> None:
        """Write the checkpoint (rank 0) once every rank is at this step."""
        state = self.state()
        if self.dist.is_main:
            save_checkpoint(state, path)
        self.dist.barrier()

    def largest_weight(self) -> float:
        """The largest parameter magnitude of the trained and the final (EMA) module; NaN if any is NaN."""
        modules = {id(m): m for m in (self.model, self.final_model)}.values()
        peaks = [p.detach().abs().max().float() for m in modules for p in m.parameters() if p.numel()]
        return float(torch.stack(peaks).max()) if peaks else 0.0

    def due(self, every: int) -> bool:
        if self.step >= self.total:
            return True
        return self.step % every == 0 if every > 0 else self.step % self.steps_per_epoch == 0


def fit(model: nn.Module, data: TrainingData, cfg: TrainConfig, *, eval_split: str = "val",
        checkpoint_dir: str | Path | None = None, resume: bool = False,
        on_eval: EvalCallback | None = None) -> TrainResult:
    """Train ``model`` in place on ``data.train`` and evaluate it on ``data.<eval_split>``.

    Args:
        model: any module mapping (N, C, R, R) images to (N, classes) logits; already built
            (and possibly holding inherited weights). Moved to the configured device.
        data: the splits, as from :func:`evaluators.data.load_dataset` (in memory) or
            :func:`evaluators.data.load_training_data` (possibly streamed from disk).
        cfg: budget, optimizer, schedule, precision, seed.
        eval_split: ``val`` (the default; the search never looks at ``test``) or ``test``.
        checkpoint_dir: where ``checkpoint.pt`` is written atomically every
            ``cfg.checkpoint_every`` steps (0: each epoch) and at the end; None: no checkpoints.
        resume: continue from ``checkpoint_dir/checkpoint.pt`` when it exists; the options that
            change the result must equal the checkpoint's (:class:`DataError` otherwise).
        on_eval: called as ``on_eval(step, EvalResult)`` at every evaluation, after the
            checkpoint of that step is written; exceptions it raises (e.g. ``optuna.TrialPruned``)
            propagate to the caller.

    Returns:
        A :class:`TrainResult`; a NaN/inf or exploding loss (training or validation) or exploded
        weights end the run with status ``diverged`` instead of raising, before that step's checkpoint and
        ``on_eval``. With EMA on, the EMA weights are copied into ``model`` at the end.
    """
    cfg.validate()
    return train_run(TrainingRun(model, data, cfg, eval_split), checkpoint_dir=checkpoint_dir, resume=resume,
                     on_eval=on_eval)


def train_run(run: TrainingRun, *, checkpoint_dir: str | Path | None = None, resume: bool = False,
              on_eval: EvalCallback | None = None) -> TrainResult:
    """Drive ``run`` to its budget: :func:`fit`'s loop, for any :class:`TrainingRun` (same arguments)."""
    model, cfg = run.model, run.cfg
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    run.dist.barrier()
    if resume and path is not None and path.is_file():
        run.restore(path)
    else:
        torch.manual_seed(cfg.seed + run.dist.rank)  # ranks draw different dropout masks
    model.train()
    started = time.perf_counter() - run.seconds
    bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step",
               disable=not (cfg.progress and run.dist.is_main), dynamic_ncols=True, leave=False)
    diverged = ""  # why the run diverged
    try:
        while run.step < run.total and not diverged:
            epoch, start = divmod(run.step, run.steps_per_epoch)
            for batch, (images, labels) in enumerate(run.train_loader.batches(epoch, start), start):
                run.loss_weight = run.dist.world_size * run.train_loader.shard_fraction(batch)
                loss = run.train_step(images, labels)
                if not math.isfinite(loss):
                    diverged = f"training loss is {loss} at step {run.step + 1}"
                    break
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                evaluated = run.evaluate(time.perf_counter() - started) if run.due(cfg.eval_every) else None
                checkpoint = path is not None and run.due(cfg.checkpoint_every)
                if evaluated is not None or checkpoint:
                    diverged = run.agreed_divergence(evaluated)
                    if diverged:
                        break
                if path is not None and checkpoint:
                    run.seconds = time.perf_counter() - started
                    run.save(path)
                if evaluated is not None and on_eval is not None:
                    on_eval(run.step, evaluated)
                if run.step >= run.total:
                    break
    finally:
        bar.close()
    run.seconds = time.perf_counter() - started
    if not diverged and (not run.history or run.history[-1]["step"] != run.step):
        # a run resumed after its last step, or with nothing evaluated
        diverged = run.agreed_divergence(run.evaluate(run.seconds))
    if diverged:
        message = f"{diverged}; training stopped"
        log.warning("%s", message)
        return TrainResult(DIVERGED, 0.0, 0.0, math.nan, run.step, run.total,
                           run.step / run.steps_per_epoch, run.seconds, run.history, message)
    if run.ema is not None:
        model.load_state_dict(run.ema.module.state_dict())
    last = run.history[-1]
    return TrainResult(COMPLETED, last["val_top1"], last["val_top5"], last["val_loss"], run.step, run.total,
                       run.step / run.steps_per_epoch, run.seconds, run.history)
