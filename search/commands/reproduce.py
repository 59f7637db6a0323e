"""``mobilenas reproduce``: MobileNetV3-Large/-Small exactly (figures), by the paper's two-stage
method on the user's device and data (search), and trained with the V3 recipe (train)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evaluators.cost import count_cost
from evaluators.latency import LatencyConfig, measure_latency
from search.config import typed
from search.package_data import conf_dir
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError
from search_spaces.printout import format_columns
from search_spaces.reference import PAPER_FIGURES, REFERENCE_PARAMS, REFERENCES, reference_spec
from search_spaces.serialize import atomic_write_text

log = logging.getLogger("mobilenas.reproduce")
ACTIONS = ("figures", "search", "train")


@dataclass
class CompareConfig:
    steps: int = 600
    trainer: str = "fast"


def reference_figures(latency_cfg: LatencyConfig, resolution: int = 224) -> list[dict[str, object]]:
    """Exact params, fvcore MAdds and measured latency of both references at 1000 classes."""
    rows = []
    for name in REFERENCES:
        spec = reference_spec(name, resolution=resolution)
        cost = count_cost(spec)
        latency = measure_latency(spec, latency_cfg.protocol(resolution))
        rows.append({
            "name": name, "params": cost.params, "reference_params": REFERENCE_PARAMS[name],
            "madds_m": cost.madds / 1e6, "conv_linear_madds_m": cost.conv_linear_madds / 1e6,
            "paper_madds_m": PAPER_FIGURES[name]["madds_m"],
            "paper_params_m": PAPER_FIGURES[name]["params_m"], "paper_top1": PAPER_FIGURES[name]["top1"],
            "latency_ms": latency.ms, "latency_iqr_ms": latency.iqr_ms,
            "protocol": latency.protocol.to_dict(),
        })
    return rows


def figures_table(rows: list[dict[str, object]]) -> str:
    header = ("network", "params", "exact?", "MAdds M (fvcore / conv+fc)", "paper MAdds M", "paper params M",
              "paper top-1", "latency ms (IQR)")
    body = [(str(r["name"]), f"{r['params']:,}", "yes" if r["params"] == r["reference_params"] else "NO",
             f"{r['madds_m']:.1f} / {r['conv_linear_madds_m']:.1f}", f"{r['paper_madds_m']:.0f}",
             f"{r['paper_params_m']}", f"{r['paper_top1']}%",
             f"{r['latency_ms']:.2f} ({r['latency_iqr_ms']:.2f})")
            for r in rows]
    return format_columns(header, body)


def _figures(cfg: DictConfig, run_dir: Path) -> None:
    latency_cfg = typed(cfg.latency, LatencyConfig, "latency")
    rows = reference_figures(latency_cfg)
    print(figures_table(rows))
    large, small = (r["latency_ms"] for r in rows)
    print(f"\nLarge/Small latency ratio {large / small:.2f} (2-core x86 reference: ~2.8x at ~18 / ~6 ms); "
          f"protocol: {json.dumps(rows[0]['protocol'])}")
    atomic_write_text(run_dir / "figures.json", json.dumps(rows, indent=2) + "\n")
    print(f"written {run_dir / 'figures.json'}")


def trainer_preset(name: str, where: str) -> DictConfig:
    """The trainer preset ``conf/trainer/<name>.yaml``; a ConfigError naming ``where`` and the
    presets there when it does not exist."""
    presets = conf_dir() / "trainer"
    path = presets / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in presets.glob("*.yaml")))
        raise ConfigError(f"{where}: {name!r} is not a trainer preset; choose one of {names}")
    return OmegaConf.load(path)


def _train(cfg: DictConfig, run_dir: Path, reference: str) -> None:
    from search.training_job import prepare_job, run_training

    node = OmegaConf.create({"arch": cfg.get("arch") or reference, "data": cfg.data, "trainer": cfg.trainer})
    run_training(prepare_job(node, run_dir))  # writes into this run dir


def _search(cfg: DictConfig, run_dir: Path, reference: str) -> None:
    from evaluators.data import load_dataset
    from evaluators.training import TrainConfig, fit
    from search.pipeline import prepare_search, run_pipeline
    from search_spaces.serialize import load_spec_file

    compare = typed(cfg.get("compare"), CompareConfig, "compare")  # checked before the long search
    if compare.steps < 1:
        raise ConfigError(f"compare.steps: must be >= 1, got {compare.steps}")
    trainer = typed(trainer_preset(compare.trainer, "compare.trainer"), TrainConfig, "compare.trainer")
    trainer = trainer.replace(steps=compare.steps, progress=False)
    # the V3 recipe (3 warm-up epochs from 1% lr, EMA 0.9999) leaves short proxies at chance
    search_trainer = cfg.get("search_trainer", "fast")
    proxy_trainer = typed(trainer_preset(search_trainer, "search_trainer"), TrainConfig, "search_trainer")
    print(f"search and NetAdapt train with the {search_trainer!r} trainer preset")
    job = prepare_search(cfg, trainer=proxy_trainer)
    run_pipeline(job, run_dir)
    refined = run_dir / "refine" / "winner.json"
    winner = load_spec_file(refined if refined.exists() else run_dir / "winner.json")
    data = load_dataset(job.settings.data)
    baseline = reference_spec(reference, num_classes=data.num_classes, resolution=data.resolution)
    results = {}
    for name, spec in (("reference " + reference, baseline.replace(in_channels=data.in_channels)),
                       ("found", winner)):
        torch.manual_seed(trainer.seed)
        model = build_model(spec)
        result = fit(model, data, trainer)
        cost = count_cost(spec)
        results[name] = {"spec": str(spec), "val_top1": result.top1, "status": result.status,
                         "madds_m": cost.madds / 1e6, "params_m": cost.params / 1e6}
        print(f"{name}: val top-1 {result.top1:.4f} after {compare.steps} steps, "
              f"{cost.madds / 1e6:.1f} M MAdds")
    atomic_write_text(run_dir / "comparison.json", json.dumps(results, indent=2) + "\n")


def run(cfg: DictConfig) -> None:
    action = cfg.get("action", "figures")
    if action not in ACTIONS:
        raise ConfigError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    reference = cfg.reproduce.reference
    if reference not in REFERENCES:
        raise ConfigError(f"reproduce.reference: {reference!r} is not one of {', '.join(REFERENCES)}")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if action == "figures":
        _figures(cfg, run_dir)
    elif action == "train":
        _train(cfg, run_dir, reference)
    else:
        _search(cfg, run_dir, reference)
