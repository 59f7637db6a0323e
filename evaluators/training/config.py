"""Typed configuration of the trainer (the schema behind ``conf/trainer/*.yaml``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from search_spaces.errors import ConfigError

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """How to train: budget, optimizer, schedule, regularization, precision, seeding.

    The budget is ``steps`` optimizer steps when set, else ``epochs`` epochs. The defaults are
    ``conf/trainer/fast.yaml`` (RMSProp, cosine, no label smoothing: quickest to learn in short
    CPU runs); ``v3_recipe.yaml`` holds the paper's recipe.

    Under ``torchrun --nproc_per_node=N`` (:mod:`evaluators.training.distributed`) ``batch_size`` is
    the global batch and the run's steps, learning rates and warm-up are those of one process with
    that batch: scaling to more GPUs changes nothing in the config. To train with a larger global
    batch, scale ``lr`` linearly with it (the V3 recipe: 0.1 at batch 4096) and keep ``warmup_epochs``.
    """

    epochs: int = 10
    steps: int | None = None
    # the GLOBAL batch: under torchrun each of the N processes takes batch_size / N images of it
    batch_size: int = 128
    optimizer: str = "rmsprop"  # rmsprop | sgd (Nesterov when nesterov=true)
    lr: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-5  # not applied to biases and batch-norm parameters
    rmsprop_alpha: float = 0.9  # RMSProp squared-gradient decay
    rmsprop_eps: float = 0.0316  # ~ TensorFlow's eps=1e-3, which sits inside the square root
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.2  # linear warm-up from warmup_start x lr
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    step_every_epochs: float = 2.4  # step schedule: lr x step_gamma every step_every_epochs
    step_gamma: float = 0.973
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights, evaluate and save it (e.g. 0.9999)
    clip_grad_norm: float = 5.0  # > 0: clip the gradient norm to this; 0: off
    amp: str = "auto"  # auto (CUDA: bf16 if supported, else fp16) | off | bf16 | fp16; CPU: always off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    bn_momentum: float | None = None  # batch-norm running-stats momentum while training (None: the model's)
    bn_recalibrate: int = 5  # > 0: re-estimate batch-norm statistics on this many batches before validating
    eval_every: int = 0  # steps between validations; 0: at the end of each epoch
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of each epoch
    progress: bool = True  # tqdm progress bar
    # torchrun on CUDA: SyncBatchNorm (statistics of the global batch); false: each process normalizes
    # its own shard of the batch (ghost batch norm of batch_size / N images)
    sync_bn: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"trainer.{key}: {message}, got {getattr(self, key)!r}")

        check(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        check(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        check(self.amp in AMP_MODES, "amp", f"must be one of {', '.join(AMP_MODES)}")
        check(self.steps is None or self.steps >= 1, "steps", "must be >= 1 or null")
        check(self.steps is not None or self.epochs >= 1, "epochs", "must be >= 1 (or set steps)")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.lr > 0, "lr", "must be positive")
        check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1); 0 turns EMA off")
        check(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        check(self.step_every_epochs > 0, "step_every_epochs", "must be positive")
        check(self.clip_grad_norm >= 0, "clip_grad_norm", "must be >= 0 (0: off)")
        check(self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.bn_momentum is None or 0 < self.bn_momentum <= 1, "bn_momentum",
              "must be in (0, 1] or null")
        check(self.bn_recalibrate >= 0, "bn_recalibrate", "must be >= 0 (0: off)")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
              "must be auto, cpu, cuda or cuda:N")

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = ("progress", "device", "checkpoint_every")
