"""``mobilenas supernet``: train a weight-sharing supernet over a space (``action=train``), or score one
of its sub-networks (``action=eval``).

``action=train`` writes a supernet run directory (``out=``, else Hydra's run dir) with
:func:`search.supernet_job.train`: ``run_config.json`` (for ``resume``), ``checkpoint.pt``, the supernet,
``metrics.json``, ``metrics.csv`` and learning curves. A diverged run gets ``status: diverged`` in its
metrics, no supernet weights and exit status 1.

``action=eval run=<dir> arch=<largest|smallest|reference|spec file|spec string>`` re-estimates the
sub-network's batch-norm statistics on seeded training batches and prints its validation top-1,
parameters, MAdds and the time taken.

``torchrun --nproc_per_node=N -m search supernet action=train ...`` trains data-parallel on N processes
(``trainer.batch_size`` is the global batch); rank 0 alone writes the run dir's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig

from evaluators.cost import count_cost
from evaluators.data import DataConfig, load_dataset
from evaluators.supernet import load_supernet, score_subnet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.scoring import CALIB_BATCH_SIZE, CALIB_BATCHES
from evaluators.training import TrainConfig
from evaluators.training.distributed import shared_run_dir
from search.arch import resolve_arch
from search.schema import from_record
from search.supernet_job import SupernetJob, saved_job, train
from search.training_job import resume_dir
from search_spaces.config import SpaceConfig
from search_spaces.errors import ConfigError, SpecError
from search_spaces.limits import SpecLimits
from search_spaces.spec import ArchSpec

ACTIONS = ("train", "eval")


@dataclass
class SupernetCommandConfig:
    """``mobilenas supernet``'s config: the shared groups, the supernet settings and the actions' options."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    space: SpaceConfig = field(default_factory=lambda: SpaceConfig(seed="mobilenet_v3_small"))
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    supernet: SupernetTrainConfig = field(default_factory=SupernetTrainConfig)
    action: str = "train"  # train | eval
    out: str | None = None  # action=train: the supernet run dir (null: hydra.run.dir)
    resume: Any = False  # action=train: true continues the run in out= (or hydra.run.dir); or a run dir
    run: str | None = None  # action=eval: a supernet run dir written by action=train
    arch: str = "largest"  # action=eval: largest | smallest | reference name | spec file | spec string
    width_mult: float = 1.0  # action=eval: width multiplier, for reference names only
    calib_batches: int = CALIB_BATCHES  # action=eval: training batches re-estimating batch-norm statistics
    batch_size: int = CALIB_BATCH_SIZE  # action=eval: batch size of that re-estimation and of validation
    seed: int = 0  # action=eval: seed choosing the re-estimation batches (same seed, same score)
    threads: int = 0  # CPU threads for torch (0: its default); 1 is fastest on a busy shared machine

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key."""
        if self.action not in ACTIONS:
            raise ConfigError(f"action: {self.action!r} is not an action; allowed: {', '.join(ACTIONS)}")
        for key in ("calib_batches", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be >= 0 (0: torch's default), got {self.threads}")
        if self.action == "eval" and not self.run:
            raise ConfigError("run: action=eval needs run=<supernet run dir> (written by action=train)")
        if self.action == "train":
            self.data.validate()
            self.trainer.validate()
            self.supernet.validate()


CONFIG = SupernetCommandConfig


def run(options: SupernetCommandConfig) -> None:
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    if options.action == "train":
        run_dir = Path(options.out) if options.out else Path(HydraConfig.get().runtime.output_dir)
        train(prepare(options, shared_run_dir(run_dir)))
    else:
        evaluate_arch(options)


# --- action=train ---------------------------------------------------------------------
def prepare(options: SupernetCommandConfig, run_dir: Path) -> SupernetJob:
    """A new run in ``run_dir``, or the saved options of the run to resume."""
    resume_from = resume_dir(options.resume, run_dir)
    if resume_from is None:
        return SupernetJob(run_dir, options.space, options.data, options.trainer, options.supernet, False)
    job = saved_job(resume_from, key="resume", progress=options.trainer.progress)
    job.data.validate()
    job.trainer.validate()
    job.settings.validate()
    return job


# --- action=eval ----------------------------------------------------------------------
def evaluate_arch(options: SupernetCommandConfig) -> None:
    """Score ``options.arch`` with the supernet of ``options.run`` and print it."""
    assert options.run is not None
    net, record = load_supernet(options.run)
    data = from_record(record.get("data"), DataConfig, f"{options.run}: data")
    spec = subnet_spec(net, options.arch, width_mult=options.width_mult)
    splits = load_dataset(data)
    score = score_subnet(net, spec, splits, calib_batches=options.calib_batches, seed=options.seed,
                         batch_size=options.batch_size)
    cost = count_cost(spec)
    print(f"{_label(options.arch)}: {splits.name} val top-1 {100 * score.top1:.2f}% (batch norm "
          f"re-estimated on {options.calib_batches} batches of {options.batch_size})  "
          f"params {cost.params_m:.3f} M  MAdds {cost.madds_m:.2f} M  scored in {score.seconds:.2f}s")
    print(f"spec: {spec}")


def subnet_spec(net: Any, arch: str, *, width_mult: float = 1.0) -> ArchSpec:
    """``arch`` (``largest``, ``smallest``, reference name, spec file or string) as a spec of ``net``'s
    space, with the space's classes, resolution and input channels; :class:`SpecError` naming the
    field that is outside the space."""
    if arch == "largest":
        return net.largest()
    if arch == "smallest":
        return net.smallest()
    seed = net.space.seed
    spec = resolve_arch(arch, width_mult=width_mult, num_classes=seed.num_classes, resolution=seed.resolution)
    spec = spec.replace(in_channels=seed.in_channels)
    try:
        net.space.params_of(spec)
    except SpecError as err:
        raise SpecError(f"arch={_label(arch)}: not in the supernet's space: {err}") from None
    return spec


def _label(arch: str) -> str:
    """``arch`` as printed: a name or file as given, a long spec string shortened."""
    return arch if len(arch) <= 60 else f"{arch[:40]}..."
