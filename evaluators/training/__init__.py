"""Training of any ``nn.Module``: SGD/RMSProp, warm-up + cosine/step schedules, EMA, mixed
precision on CUDA, atomic checkpoints with exact resume, top-1/top-5 evaluation; data-parallel on
several processes under ``torchrun`` (:mod:`evaluators.training.distributed`)."""

from evaluators.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, save_weights
from evaluators.training.config import TrainConfig
from evaluators.training.metrics import EvalResult, evaluate
from evaluators.training.trainer import COMPLETED, DIVERGED, TrainResult, budget_steps, fit

__all__ = ["CHECKPOINT", "COMPLETED", "DIVERGED", "EvalResult", "TrainConfig", "TrainResult",
           "budget_steps", "evaluate", "fit", "load_checkpoint", "save_checkpoint", "save_weights"]
