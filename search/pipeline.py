"""The main job: a latency-constrained search with Optuna, then (by default) NetAdapt refinement
of the winner and its export; ``mobilenas search`` and ``mobilenas reproduce action=search`` run it."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import optuna
import torch

from evaluators.accuracy import ProxyConfig
from evaluators.data import DataConfig
from evaluators.latency import LatencyConfig, LutLatency
from evaluators.training import TrainConfig
from search.components import SearchSettings, build_components, latency_range, pin_target
from search.export import ExportOptions, export_run
from search.export_sources import read_run
from search.netadapt import NetAdaptConfig
from search.netadapt.refine import refine, write_outputs
from search.objectives import ObjectiveConfig
from search.results import ranking_table
from search.run_record import latency_protocol
from search.runner import Components, SearchReport, run_search, write_results
from search.study import StudyConfig, mask_secrets, storage_url
from search.study import validate as validate_study
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
    # rerunning with the same study.name (and run dir) continues the study; 2 worker processes
    study: StudyConfig = field(default_factory=lambda: StudyConfig(n_startup_trials=6, workers=2))
    results: ResultsConfig = field(default_factory=ResultsConfig)

    def validate(self) -> None:
        """Every group's own checks, before the latency table and the workers are set up."""
        validate_study(self.study)
        super().validate()
        self.data.validate()
        self.trainer.validate()
        self.proxy.validate()
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


def prepare_search(cfg: SearchConfig, *, trainer: TrainConfig | None = None) -> SearchJob:
    """The typed options of the main job (see :func:`settings_from` for ``trainer``)."""
    settings, study, results, pipeline = settings_from(cfg, trainer=trainer)
    netadapt = cfg.netadapt if pipeline.refine else None
    return SearchJob(settings, study, results, pipeline, netadapt)


def run_pipeline(job: SearchJob, run_dir: Path) -> SearchReport:
    """The search in ``run_dir``, its results and report, then NetAdapt on the winner and its export
    as ``job.pipeline`` says."""
    settings, study_cfg, results_cfg, pipeline = job.settings, job.study, job.results, job.pipeline
    url = storage_url(study_cfg, run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // study_cfg.workers))  # the cores, shared by workers
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
        data = components.data  # the proxy's splits: loaded once, shared with the search
        assert data is not None, "build_components loads the proxy's data"
        refine_dir = run_dir / "refine"
        print(f"\nNetAdapt: refining trial {winner.number} ({winner.latency_ms:.3f} ms) in {refine_dir}")
        result = refine(winner.arch, config=netadapt, latency_ms=components.latency, data=data,
                        trainer=settings.trainer, run_dir=refine_dir, progress=True)
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
