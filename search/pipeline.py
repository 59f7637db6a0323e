"""The main job after the search: refine the winner with NetAdapt, then export it."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from search.components import SearchSettings
from search.config import typed
from search.export import ExportOptions, export_run
from search.export_sources import read_run
from search.netadapt import NetAdaptConfig
from search.netadapt.refine import latency_protocol, refine, write_outputs
from search.runner import Components, SearchReport
from search_spaces.serialize import atomic_write_text

log = logging.getLogger("mobilenas.pipeline")


def refine_and_export(cfg: DictConfig, settings: SearchSettings, components: Components, report: SearchReport,
                      run_dir: Path, *, refine_winner: bool = True, export: bool = True,
                      to_search_target: bool = False) -> Path | None:
    """NetAdapt on the search winner (in ``run_dir/refine``, resumable), then export the result
    (or the untrained winner when refinement is off) to ``run_dir/export``. Returns the export dir.

    NetAdapt aims at the netadapt group's target, or with ``to_search_target`` at the search's
    own latency target (the paper's flow: search near the target, NetAdapt to reach it)."""
    assert report.winner is not None
    winner = report.winner
    source_dir = run_dir
    provenance: dict[str, Any] = {
        "method": "Optuna search (MnasNet-style factorized space)",
        "study": str(run_dir), "trial": winner.number, "objective": components.objective.mode,
        "target_ms": components.objective.target_ms, "search_accuracy": winner.accuracy,
    }
    if refine_winner:
        netadapt_cfg = typed(cfg.get("netadapt"), NetAdaptConfig, "netadapt")
        if to_search_target:
            netadapt_cfg = replace(netadapt_cfg, target_ms=components.objective.target_ms)
        data = components.data  # the proxy's splits: loaded once, shared with the search
        refine_dir = run_dir / "refine"
        print(f"\nNetAdapt: refining trial {winner.number} ({winner.latency_ms:.3f} ms) in {refine_dir}")
        result = refine(winner.arch, config=netadapt_cfg, latency_ms=components.latency, data=data,
                        trainer=settings.trainer, run_dir=refine_dir, progress=True)
        write_outputs(refine_dir, result, data=data, trainer=settings.trainer, config=netadapt_cfg,
                      protocol=latency_protocol(components.latency),
                      seed_source=f"search winner, trial {winner.number} of {run_dir}")
        print(f"NetAdapt {result.status} after {result.iterations} iterations: latency "
              f"{result.seed_latency_ms:.3f} -> {result.latency_ms:.3f} ms (target {result.target_ms:.3f}), "
              f"val top-1 {result.seed_accuracy:.4f} -> {result.accuracy:.4f}")
        source_dir = refine_dir
    if not export:
        return None
    source = read_run(source_dir)
    metadata = {**source.metadata}
    metadata.setdefault("provenance", provenance)
    if not refine_winner:
        metadata.update({"latency_ms": winner.latency_ms, "protocol": latency_protocol(components.latency)})
    out = run_dir / "export"
    result = export_run(source.spec, source.weights, out, metadata, options=ExportOptions())
    print(f"exported to {out}: " + ", ".join(sorted(result.files)))
    atomic_write_text(run_dir / "pipeline.json", json.dumps({"export": str(out), "source": str(source_dir)}) + "\n")
    return out
