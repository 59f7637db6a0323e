"""``mobilenas supernet``: train a weight-sharing supernet over a space (``action=train``), or score one
of its sub-networks (``action=eval``).

``action=train`` writes a supernet run directory (``out=``, else Hydra's run dir): ``run_config.json``
(space, data, trainer and supernet options, for ``resume``), ``checkpoint.pt``, the supernet itself
(:func:`~evaluators.supernet.save_supernet`: weights, space, training record, data description),
``metrics.json``, ``metrics.csv`` and one learning curve per sub-network size. A diverged run gets
``status: diverged`` in its metrics, no supernet weights and exit status 1.

``action=eval run=<dir> arch=<largest|smallest|reference|spec file|spec string>`` re-estimates the
sub-network's batch-norm statistics on seeded training batches and prints its validation top-1,
parameters, MAdds and the time taken.

``torchrun --nproc_per_node=N -m search supernet action=train ...`` trains data-parallel on N processes
(``trainer.batch_size`` is the global batch); rank 0 alone writes the run dir's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig

from evaluators.cost import count_cost
from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.supernet import SuperNet, load_supernet, save_supernet, score_subnet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.rundir import MANIFEST, WEIGHTS
from evaluators.supernet.scoring import CALIB_BATCH_SIZE, CALIB_BATCHES
from evaluators.supernet.train import SIZES, size_history, train_supernet
from evaluators.training import TrainConfig, TrainResult
from evaluators.training.distributed import context, shared_run_dir
from evaluators.training.report import plot_learning_curve, write_metrics
from search.arch import resolve_arch
from search.schema import from_record
from search.training_job import RUN_CONFIG, read_run_config, resume_dir
from search_spaces import serialize
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import ConfigError, SpecError, TrainingDiverged
from search_spaces.limits import SpecLimits
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class SupernetJob:
    """What one supernet training run is made of, fixed when it starts and reused on resume."""

    run_dir: Path
    space: SpaceConfig
    data: DataConfig
    trainer: TrainConfig
    settings: SupernetTrainConfig
    resuming: bool


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
    job = _saved_job(resume_from, progress=options.trainer.progress)
    job.data.validate()
    job.trainer.validate()
    job.settings.validate()
    return job


def _saved_job(run_dir: Path, *, progress: bool) -> SupernetJob:
    saved = run_dir / RUN_CONFIG
    stored = read_run_config(run_dir, key="resume", kind="supernet",
                             started_by="mobilenas supernet action=train")
    trainer = from_record(stored.get("trainer"), TrainConfig, f"{saved}: trainer").replace(progress=progress)
    return SupernetJob(run_dir, from_record(stored.get("space"), SpaceConfig, f"{saved}: space"),
                       from_record(stored.get("data"), DataConfig, f"{saved}: data"), trainer,
                       from_record(stored.get("supernet"), SupernetTrainConfig, f"{saved}: supernet"), True)


def train(job: SupernetJob) -> dict[str, Any]:
    """Train the job's supernet, write the run dir's files and print the sizes' figures (rank 0 only
    under torchrun)."""
    ctx = context()
    splits = load_dataset(job.data)
    space = build_space(job.space, num_classes=splits.num_classes, resolution=splits.resolution,
                        in_channels=splits.in_channels)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if not job.resuming and ctx.is_main:
        serialize.atomic_write_text(job.run_dir / RUN_CONFIG, json.dumps(
            {"space": asdict(job.space), "data": asdict(job.data), "trainer": job.trainer.to_dict(),
             "supernet": job.settings.to_dict()}, indent=2) + "\n")
    log.info("supernet run dir %s%s; space of %.3g architectures", job.run_dir,
             " (resuming)" if job.resuming else "", space.size())
    torch.manual_seed(job.trainer.seed)
    net = SuperNet(space)
    eval_split = "val" if len(splits.val) else "test"
    result = train_supernet(net, splits, job.trainer, job.settings, eval_split=eval_split,
                            checkpoint_dir=job.run_dir, resume=job.resuming)
    metrics = _metrics(job, splits, result, eval_split)
    if ctx.is_main:
        _write_files(job, net, splits, result, metrics)
    ctx.barrier()
    if not result.ok:
        metrics_file = job.run_dir / "metrics.json"
        raise TrainingDiverged(f"supernet training diverged: {result.message}; see {metrics_file}; "
                               "lower trainer.lr or set trainer.clip_grad_norm")
    if ctx.is_main:
        _print_training(metrics, job.run_dir)
    return metrics


def _write_files(job: SupernetJob, net: SuperNet, splits: DatasetSplits, result: TrainResult,
                 metrics: dict[str, Any]) -> None:
    """The supernet (when completed), metrics and learning curves of a finished or diverged run."""
    if result.ok:
        save_supernet(job.run_dir, net.cpu(), record=_record(job, splits, metrics))
    else:  # never leave weights beside a diverged run's metrics, not even an earlier run's
        for name in (WEIGHTS, MANIFEST):
            (job.run_dir / name).unlink(missing_ok=True)
    write_metrics(job.run_dir, metrics)
    for size in SIZES if result.history else ():
        plot_learning_curve(size_history(result.history, size), job.run_dir / f"learning_curve_{size}.png",
                            title=f"supernet, {size} sub-network: {splits.name} {splits.resolution}x"
                                  f"{splits.resolution}")


def _metrics(job: SupernetJob, splits: DatasetSplits, result: TrainResult, eval_split: str) -> dict[str, Any]:
    last = result.history[-1] if result.history and result.ok else {}
    return {
        "status": result.status, "message": result.message, "split": eval_split,
        "sizes": {size: {key: last.get(f"{size}_{key}") for key in ("top1", "loss")} for size in SIZES},
        "top1": result.top1, "top5": result.top5, "loss": result.loss, "data": splits.summary(),
        "budget": {"steps": result.total_steps, "epochs": round(result.epochs, 4),
                   "batch_size": job.trainer.batch_size},
        "trainer": job.trainer.to_dict(), "supernet": job.settings.to_dict(),
        "seconds": round(result.seconds, 3), "history": result.history,
    }


def _record(job: SupernetJob, splits: DatasetSplits, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"data": asdict(job.data), "data_summary": splits.summary(), "space_config": asdict(job.space),
            "trainer": job.trainer.to_dict(), "supernet": job.settings.to_dict(),
            "status": metrics["status"], "sizes": metrics["sizes"], "budget": metrics["budget"],
            "seconds": metrics["seconds"]}


def _print_training(metrics: dict[str, Any], run_dir: Path) -> None:
    sizes = "  ".join(f"{size} {100 * figures['top1']:.2f}%" for size, figures in metrics["sizes"].items())
    print(f"supernet on {metrics['data']['name']}: {metrics['split']} top-1 {sizes}  "
          f"({metrics['budget']['steps']} steps in {metrics['seconds']:.1f}s, "
          f"chance {100 / metrics['data']['num_classes']:.1f}%)")
    print(f"run dir: {run_dir}")


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
