"""``mobilenas train``: train an architecture on a data set, resumably, and write the run's files.

The run directory gets ``spec.json``, ``run_config.json`` (data and trainer options),
``checkpoint.pt`` (atomic, for ``resume``), ``weights.safetensors`` (final weights; the EMA
weights when EMA is on), ``metrics.json``, ``metrics.csv`` and ``learning_curve.png``.
A run that diverges gets ``status: diverged`` in its metrics, no ``weights.safetensors`` and exit
status 1 (:class:`TrainingDiverged`).

``torchrun --nproc_per_node=N -m search train ...`` trains data-parallel on N processes
(:mod:`evaluators.training.distributed`); ``trainer.batch_size`` is the global batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from evaluators.training.distributed import context
from search.training_job import TrainOptions, prepare_job, run_training

log = logging.getLogger(__name__)
CONFIG = TrainOptions


def run(options: TrainOptions) -> None:
    job = prepare_job(options, Path(HydraConfig.get().runtime.output_dir))
    log.info("run dir %s%s", job.run_dir, " (resuming)" if job.resuming else "")
    metrics = run_training(job)
    if not context().is_main:  # under torchrun, rank 0 reports
        return
    print(f"{metrics['data']['name']}: {metrics['split']} top-1 {100 * metrics['top1']:.2f}%  "
          f"top-5 {100 * metrics['top5']:.2f}%  ({metrics['history_split']} top-1 "
          f"{100 * metrics['val_top1']:.2f}%, chance {100 / metrics['data']['num_classes']:.1f}%)  "
          f"{metrics['budget']['steps']} steps in {metrics['seconds']:.1f}s")
    print(f"run dir: {job.run_dir}")
