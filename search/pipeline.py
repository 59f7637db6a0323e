"""The main job: a latency-constrained search with Optuna, then (by default) NetAdapt refinement
of the winner and its export; ``mobilenas search`` and ``mobilenas reproduce action=search`` run it.
With ``proxy=supernet|predictor`` and no ``proxy.supernet``, a supernet is trained first, in the run
dir (the ``supernet`` stage), and both the search and NetAdapt score on it."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import optuna
import torch

from evaluators.accuracy import ProxyConfig
from evaluators.accuracy.config import SUPERNET_KINDS
from evaluators.accuracy.weight_sharing import SupernetEvaluator
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig, LutLatency
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.rundir import MANIFEST
from evaluators.training import TrainConfig
from evaluators.training.config import RESUMABLE_CHANGES
from search.components import SearchSettings, build_components, latency_range, pin_target
from search.export import ExportOptions, export_run
from search.export_sources import read_run
from search.netadapt import NetAdaptConfig
from search.netadapt.refine import refine, write_outputs
from search.netadapt.supernet import SupernetScorer
from search.objectives import ObjectiveConfig
from search.results import ranking_table
from search.run_record import latency_protocol
from search.runner import Components, SearchReport, run_search, write_results
from search.study import StudyConfig, mask_secrets, storage_url
from search.study import validate as validate_study
from search.supernet_job import SupernetJob, saved_job
from search.supernet_job import train as train_supernet_job
from search.training_job import RUN_CONFIG
from search_spaces.config import SpaceConfig
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits
from search_spaces.serialize import atomic_write_text

log = logging.getLogger("mobilenas.pipeline")


@dataclass
class ResultsConfig:
    top_k: int = 10
    reference_points: bool = True  # evaluate V3-Large/Small once and mark them on the plot


REFINE_TARGETS = ("netadapt", "search")
SUPERNET_DIR = "supernet"  # the supernet stage's run dir, inside the search's


@dataclass
class SupernetStageConfig(SupernetTrainConfig):
    """The main job's own supernet (the ``supernet`` stage): with ``proxy=supernet|predictor`` and no
    ``proxy.supernet``, trained ``steps`` steps at ``batch_size`` with the search's trainer recipe in
    ``<run dir>/supernet`` before the search (checkpointed every ``checkpoint_every`` steps: a rerun
    resumes it, and reuses it once saved); the sandwich settings are ``SupernetTrainConfig``'s, but
    for ``distill``: off. In so short a budget the teacher (the largest) is weak most of the time and
    its soft labels hold the students back: 300 steps on the synthetic set, largest / smallest / seed
    sub-network 34.6 / 20.2 / 17.0% top-1 with ``kl``, 55.8 / 57.4 / 49.6% with ``off``."""

    distill: str = "off"
    steps: int = 300
    batch_size: int = 64
    checkpoint_every: int = 50

    def validate(self) -> None:
        super().validate()
        for key in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"supernet.{key}: must be an integer >= 1, got {value!r}")


@dataclass
class PipelineConfig:
    refine: bool = True  # NetAdapt on the winner (netadapt group)
    refine_target: str = "netadapt"  # netadapt: the netadapt group's target | search: the search's target
    export: bool = True  # export the final network

    def validate(self) -> None:
        if self.refine_target not in REFINE_TARGETS:
            raise ConfigError(f"refine_target: {self.refine_target!r} is not one of "
                              f"{', '.join(REFINE_TARGETS)}")


def _main_job_netadapt() -> NetAdaptConfig:
    """NetAdapt of the main job: trim the winner to 90% of its latency, at least 3% per iteration; the
    winner is trained 150 steps first, each proposal fine-tuned 20, the final network 150."""
    return NetAdaptConfig(target_ratio=0.9, delta_ratio=0.03, pretrain_steps=150, short_steps=20,
                          final_steps=150)


@dataclass
class SearchConfig(PipelineConfig):
    """``mobilenas search``'s config (conf/search.yaml). The defaults are the main job's budgets: the whole
    pipeline fits in ~10 minutes on 2 CPU cores (proxies of 100 steps at batch 64, a short NetAdapt, 20
    trials on 2 workers)."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64, progress=False))
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig(steps=100))  # the group's default: 300
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    netadapt: NetAdaptConfig = field(default_factory=_main_job_netadapt)
    supernet: SupernetStageConfig = field(default_factory=SupernetStageConfig)  # proxy=supernet|predictor
    # rerunning with the same study.name (and run dir) continues the study; 2 worker processes
    study: StudyConfig = field(default_factory=lambda: StudyConfig(n_startup_trials=6, workers=2))
    results: ResultsConfig = field(default_factory=ResultsConfig)

    def validate(self) -> None:
        """Every group's own checks, before the latency table and the workers are set up."""
        validate_study(self.study)
        super().validate()
        self.data.validate()
        self.trainer.validate()
        if self.proxy.kind in SUPERNET_KINDS and not self.proxy.supernet:  # the supernet stage trains one
            self.supernet.validate()
            replace(self.proxy, supernet=SUPERNET_DIR).validate()
        else:
            self.proxy.validate()
        if self.proxy.kind in SUPERNET_KINDS and self.refine and self.netadapt.supernet is None:
            # NetAdapt will score on the search's supernet: its kinds must be sub-network kinds, checked now
            replace(self.netadapt, supernet=self.proxy.supernet or SUPERNET_DIR)
        self.latency.validate()  # netadapt checks itself when built (NetAdaptConfig.__post_init__)


def settings_from(
    cfg: SearchConfig, *, trainer: TrainConfig | None = None,
) -> tuple[SearchSettings, StudyConfig, ResultsConfig, PipelineConfig]:
    """The parts of the search's config (validated: :func:`search.schema.to_options`); ``trainer`` (the
    proxies' and NetAdapt's training) in place of ``cfg.trainer`` when given."""
    settings = SearchSettings(
        space=cfg.space, data=cfg.data, trainer=trainer if trainer is not None else cfg.trainer,
        proxy=cfg.proxy, latency=cfg.latency, objective=cfg.objective, seed=cfg.study.seed,
        reference_points=cfg.results.reference_points,
    )
    pipeline = PipelineConfig(refine=cfg.refine, refine_target=cfg.refine_target, export=cfg.export)
    return settings, cfg.study, cfg.results, pipeline


def prepare_latency_table(components: Components) -> None:
    """Measure every layer the space can produce before the search starts (seconds at 32x32,
    minutes at 224x224, once per machine): workers then share one complete table instead of
    racing to add rows, and every candidate's latency comes from the same measurements."""
    if not isinstance(components.latency, LutLatency) or not components.latency.protocol.measurable:
        return
    table = components.latency.table
    missing = table.missing(list(components.space.layers()))
    if missing:
        print(f"latency table {table.path}: measuring {len(missing)} layers of the space")
        table.build(missing, progress=True)


def warn_unreachable_target(components: Components, seed_ms: float) -> None:
    """Say before the search starts when no candidate can meet the target (on stderr), or when
    every candidate does (on stdout)."""
    reach = latency_range(components)
    if reach is None:
        return
    note = components.objective.reach_note(fastest_ms=reach[0], slowest_ms=reach[1], seed_ms=seed_ms)
    if note is not None:
        print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)


def print_report(report: SearchReport, run_dir: Path, url: str, top_k: int) -> None:
    print(f"\nbest candidates (of {len(report.found)} evaluated):")
    print(ranking_table(report.found, top_k=top_k))
    if report.winner is not None:
        w = report.winner
        print(f"\nwinner: trial {w.number}, accuracy {w.accuracy:.4f}, latency {w.latency_ms:.3f} ms "
              f"({'meets' if w.feasible else 'MISSES'} the target), {w.madds / 1e6:.1f} M MAdds, "
              f"{w.params / 1e6:.2f} M params\n  {w.spec}")
    print(f"\nresults in {run_dir}:")
    for name, path in report.files.items():
        print(f"  {name:<8} {path}")
    url = mask_secrets(url)  # a password in study.storage is never printed
    dashboard = url.removeprefix("journal:///")
    print(f"  study    {url}\n  dashboard: pip install optuna-dashboard && optuna-dashboard {dashboard}")


@dataclass(frozen=True)
class SearchJob:
    """A search run's options, typed and checked before anything is measured or trained."""

    settings: SearchSettings
    study: StudyConfig
    results: ResultsConfig
    pipeline: PipelineConfig
    netadapt: NetAdaptConfig | None  # None: no refinement
    supernet: SupernetStageConfig = field(default_factory=SupernetStageConfig)


def prepare_search(cfg: SearchConfig, *, trainer: TrainConfig | None = None) -> SearchJob:
    """The typed options of the main job (see :func:`settings_from` for ``trainer``)."""
    settings, study, results, pipeline = settings_from(cfg, trainer=trainer)
    netadapt = cfg.netadapt if pipeline.refine else None
    return SearchJob(settings, study, results, pipeline, netadapt, cfg.supernet)


def supernet_stage(settings: SearchSettings, stage: SupernetStageConfig, run_dir: Path) -> SearchSettings:
    """``settings`` with ``proxy.supernet`` set: as given, or (proxy=supernet|predictor without one) the
    supernet of ``run_dir/supernet``, trained there first with ``stage``'s budget unless a rerun
    finds it saved (an interrupted training resumes from its checkpoint). :class:`ConfigError` naming
    the options that differ when the supernet there was started with others."""
    if settings.proxy.kind not in SUPERNET_KINDS or settings.proxy.supernet:
        return settings
    out = run_dir / SUPERNET_DIR
    job = stage_job(settings, stage, out)
    if (out / RUN_CONFIG).is_file():
        differ = differing_options(saved_job(out, key="supernet", progress=job.trainer.progress), job)
        if differ:
            raise ConfigError(f"supernet: {out} was trained with other options ({', '.join(differ)} differ); "
                              f"delete {out} to train a new supernet, or set them back")
        job = replace(job, resuming=True)
    if (out / MANIFEST).is_file():
        print(f"supernet: reusing {out} (delete it to train a new one)")
    else:
        print(f"supernet: training {stage.steps} steps (batch {stage.batch_size}) over the search space in "
              f"{out}")
        # a rerun with the same options would resume the diverged run, with others it is refused: a new
        # training needs the dir gone
        train_supernet_job(job, retry=f"delete {out}, then rerun with a lower trainer.lr, "
                                      "trainer.clip_grad_norm set or other supernet.* options")
    return replace(settings, proxy=replace(settings.proxy, supernet=str(out)))


def stage_job(settings: SearchSettings, stage: SupernetStageConfig, out: Path) -> SupernetJob:
    """The supernet stage as a supernet training job in ``out`` (what ``mobilenas supernet action=train
    resume=<out>`` resumes): the search's space, data and trainer recipe at ``stage``'s budget."""
    trainer = replace(settings.trainer, steps=stage.steps, batch_size=stage.batch_size,
                      eval_every=stage.steps, checkpoint_every=stage.checkpoint_every)
    sandwich = SupernetTrainConfig(**{f.name: getattr(stage, f.name) for f in fields(SupernetTrainConfig)})
    return SupernetJob(out, settings.space, settings.data, trainer, sandwich, resuming=False)


# trainer keys the stage sets from its own config (stage_job): named as the user sets them
_STAGE_KEYS = {"trainer.steps": "supernet.steps", "trainer.eval_every": "supernet.steps",
               "trainer.batch_size": "supernet.batch_size"}


def differing_options(saved: SupernetJob, job: SupernetJob) -> list[str]:
    """The options (``group.key``, as the search's config names them) of ``job`` that differ from
    ``saved``'s, but those a resumed training may change
    (:data:`~evaluators.training.config.RESUMABLE_CHANGES`)."""
    before, now = saved.options(), job.options()
    keys = [f"{group}.{key}" for group in now for key in now[group]
            if before[group].get(key) != now[group][key]
            and not (group == "trainer" and key in RESUMABLE_CHANGES)]
    return list(dict.fromkeys(_STAGE_KEYS.get(key, key) for key in keys))


def run_pipeline(job: SearchJob, run_dir: Path) -> SearchReport:
    """The search in ``run_dir``, its results and report, then NetAdapt on the winner and its export
    as ``job.pipeline`` says."""
    settings, study_cfg, results_cfg, pipeline = job.settings, job.study, job.results, job.pipeline
    url = storage_url(study_cfg, run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // study_cfg.workers))  # the cores, shared by workers
    # as many threads as a worker: on 2 busy cores a supernet step took 0.7 s with 1 thread, 17 s with 2
    settings = supernet_stage(settings, job.supernet, run_dir)
    components = build_components(settings)
    prepare_latency_table(components)
    settings = pin_target(components, settings, study_cfg, url)
    space, objective = components.space, components.objective
    seed_ms = components.latency(space.seed)
    print(f"search space: {len(space.stages)} stages around {settings.space.seed}, "
          f"{space.size():.3e} architectures; seed latency {seed_ms:.3f} ms, "
          f"target {objective.target_ms:.4g} ms ({objective.mode} objective)")
    warn_unreachable_target(components, seed_ms)
    # the search shows one progress bar; the proxy trainings' own log lines would drown it
    logging.getLogger("evaluators.training").setLevel(logging.WARNING)
    study = run_search(partial(build_components, settings), study_cfg, url, components=components)
    logging.getLogger("evaluators.training").setLevel(logging.NOTSET)
    report = write_results(study, components, run_dir, top_k=results_cfg.top_k,
                           with_references=results_cfg.reference_points)
    print_report(report, run_dir, url, results_cfg.top_k)
    if report.winner is not None and (pipeline.refine or pipeline.export):
        refine_and_export(settings, components, report, run_dir, netadapt=job.netadapt,
                          export=pipeline.export, to_search_target=pipeline.refine_target == "search")
    return report


def refine_and_export(settings: SearchSettings, components: Components, report: SearchReport, run_dir: Path,
                      *, netadapt: NetAdaptConfig | None, export: bool = True,
                      to_search_target: bool = False) -> Path | None:
    """NetAdapt with ``netadapt`` on the search winner (in ``run_dir/refine``, resumable), then export
    the result (or the untrained winner when ``netadapt`` is None: no refinement) to ``run_dir/export``.
    Returns the export dir.

    NetAdapt aims at the netadapt group's target, or with ``to_search_target`` at the search's
    own latency target (the paper's flow: search near the target, NetAdapt to reach it)."""
    assert report.winner is not None
    winner = report.winner
    source_dir = run_dir  # its run record (run.json): the winner, its latency and provenance
    if netadapt is not None:
        if to_search_target:
            netadapt = replace(netadapt, target_ms=components.objective.target_ms)
        scorer = None
        supernet = settings.proxy.supernet
        if isinstance(components.accuracy, SupernetEvaluator) and netadapt.supernet in (None, supernet):
            # NetAdapt scores its proposals on the search's supernet, with the search's data and settings
            netadapt = replace(netadapt, supernet=supernet)
            scorer = SupernetScorer(components.accuracy, str(supernet))
        data = components.data  # the proxy's splits: loaded once, shared with the search
        assert data is not None, "build_components loads the proxy's data"
        refine_dir = run_dir / "refine"
        print(f"\nNetAdapt: refining trial {winner.number} ({winner.latency_ms:.3f} ms) in {refine_dir}")
        result = refine(winner.arch, config=netadapt, latency_ms=components.latency, data=data,
                        trainer=settings.trainer, run_dir=refine_dir, progress=True, scorer=scorer,
                        data_config=settings.data)
        write_outputs(refine_dir, result, data=data, trainer=settings.trainer, config=netadapt,
                      protocol=latency_protocol(components.latency),
                      seed_source=f"search winner, trial {winner.number} of {run_dir}")
        print(f"NetAdapt {result.status} after {result.iterations} iterations: latency "
              f"{result.seed_latency_ms:.3f} -> {result.latency_ms:.3f} ms (target {result.target_ms:.3f}), "
              f"val top-1 {result.seed_accuracy:.4f} -> {result.accuracy:.4f}")
        source_dir = refine_dir
    if not export:
        return None
    source = read_run(source_dir)
    out = run_dir / "export"
    exported = export_run(source.spec, source.weights, out, source.metadata, options=ExportOptions())
    print(f"exported to {out}: " + ", ".join(sorted(exported.files)))
    record = {"export": str(out), "source": str(source_dir)}
    atomic_write_text(run_dir / "pipeline.json", json.dumps(record) + "\n")
    return out
