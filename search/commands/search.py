"""``mobilenas search``: the main job. A latency-constrained search with Optuna, then (by
default) NetAdapt refinement of the winner and its export."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from search.components import SearchSettings, build_components, latency_range, pin_target
from search.config import ConfigError, typed
from search.results import ranking_table
from search.runner import Components, SearchReport, run_search, write_results
from search.study import StudyConfig, mask_secrets, storage_url
from search.study import validate as validate_study


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


def settings_from(cfg: DictConfig) -> tuple[SearchSettings, StudyConfig, ResultsConfig, PipelineConfig]:
    from evaluators.accuracy import ProxyConfig
    from evaluators.data import DataConfig
    from evaluators.latency import LatencyConfig
    from evaluators.training import TrainConfig
    from search.objectives import ObjectiveConfig
    from search_spaces.config import SpaceConfig

    study = typed(cfg.study, StudyConfig, "study")
    validate_study(study)  # before the latency table and the workers are set up
    results = typed(cfg.get("results"), ResultsConfig, "results")
    settings = SearchSettings(
        space=typed(cfg.space, SpaceConfig, "space"),
        data=typed(cfg.data, DataConfig, "data"),
        trainer=typed(cfg.trainer, TrainConfig, "trainer"),
        proxy=typed(cfg.proxy, ProxyConfig, "proxy"),
        latency=typed(cfg.latency, LatencyConfig, "latency"),
        objective=typed(cfg.objective, ObjectiveConfig, "objective"),
        seed=study.seed,
        reference_points=results.reference_points,
    )
    pipeline = PipelineConfig(refine=bool(cfg.get("refine", True)), export=bool(cfg.get("export", True)),
                              refine_target=str(cfg.get("refine_target", "netadapt")))
    if pipeline.refine_target not in REFINE_TARGETS:
        raise ConfigError(f"refine_target: {pipeline.refine_target!r} is not one of {', '.join(REFINE_TARGETS)}")
    return settings, study, results, pipeline


def prepare_latency_table(components: Components) -> None:
    """Measure every layer the space can produce before the search starts (seconds at 32x32,
    minutes at 224x224, once per machine): workers then share one complete table instead of
    racing to add rows, and every candidate's latency comes from the same measurements."""
    table = getattr(components.latency, "table", None)
    if table is None or not table.protocol.measurable:
        return
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


def run(cfg: DictConfig) -> None:
    settings, study_cfg, results_cfg, pipeline = settings_from(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
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
    if report.winner is None:
        return
    if pipeline.refine or pipeline.export:
        from search.pipeline import refine_and_export

        refine_and_export(cfg, settings, components, report, run_dir, refine_winner=pipeline.refine,
                          export=pipeline.export, to_search_target=pipeline.refine_target == "search")
