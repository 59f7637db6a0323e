"""Learning rate as a pure function of the step: warm-up, then cosine, step or constant."""

from __future__ import annotations

import math

from evaluators.training.config import TrainConfig


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of a ``total_steps`` run."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (cfg.warmup_start + (1 - cfg.warmup_start) * step / warmup)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** math.floor(step / steps_per_epoch / cfg.step_every_epochs)
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
