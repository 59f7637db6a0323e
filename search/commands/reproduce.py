"""``mobilenas reproduce``: MobileNetV3-Large/-Small exactly (figures), by the paper's two-stage
method on the user's device and data (search), trained with the V3 recipe (train), and published
weights evaluated on an ImageNet-style validation folder (evaluate)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig

from evaluators.cost import count_cost
from evaluators.latency import LatencyConfig, measure_latency
from evaluators.training import TrainConfig
from search.evaluate_weights import EvaluateConfig
from search.pipeline import SearchConfig
from search.schema import preset
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, RunFailure
from search_spaces.printout import format_columns
from search_spaces.reference import PAPER_FIGURES, REFERENCE_PARAMS, REFERENCES, reference_spec
from search_spaces.serialize import atomic_write_text

log = logging.getLogger("mobilenas.reproduce")
ACTIONS = ("figures", "search", "train", "evaluate")


@dataclass
class CompareConfig:
    steps: int = 600  # training budget of both networks in the action=search comparison
    trainer: str = "fast"  # trainer preset for the comparison (conf/trainer/<name>.yaml)


@dataclass
class ReferenceConfig:
    reference: str = "mobilenet_v3_small"  # set by the experiment group


@dataclass
class ReproduceConfig(SearchConfig):
    """``mobilenas reproduce``'s config (conf/reproduce.yaml): every knob of the search, the experiment's
    reference and the actions' options."""

    action: str = "figures"  # figures | search | train | evaluate
    arch: str | None = None  # action=train: reference name, spec file/string or run dir (null: the reference)
    # action=search: trainer preset of the proxy trainings and NetAdapt's fine-tuning (the V3 recipe's
    # 3 warm-up epochs and EMA 0.9999 leave short proxies at chance)
    search_trainer: str = "fast"
    compare: CompareConfig = field(default_factory=CompareConfig)
    reproduce: ReferenceConfig = field(default_factory=ReferenceConfig)
    # pretrained (issue 15): a torchvision / timm / mobilenas state_dict file; action=evaluate: required,
    # evaluated on data=folder data.root=<ImageNet-style val dir>; action=train: the initialization
    weights: str | None = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # action=evaluate's transform, loader

    def validate(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"action: {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.reproduce.reference not in REFERENCES:
            raise ConfigError(f"reproduce.reference: {self.reproduce.reference!r} is not one of "
                              f"{', '.join(REFERENCES)}")
        if self.compare.steps < 1:  # checked before the long search
            raise ConfigError(f"compare.steps: must be >= 1, got {self.compare.steps}")
        super().validate()


CONFIG = ReproduceConfig


def reference_figures(latency_cfg: LatencyConfig, resolution: int = 224) -> list[dict[str, Any]]:
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


def figures_table(rows: list[dict[str, Any]]) -> str:
    header = ("network", "params", "exact?", "MAdds M (fvcore / conv+fc)", "paper MAdds M", "paper params M",
              "paper top-1", "latency ms (IQR)")
    body = [(str(r["name"]), f"{r['params']:,}", "yes" if r["params"] == r["reference_params"] else "NO",
             f"{r['madds_m']:.1f} / {r['conv_linear_madds_m']:.1f}", f"{r['paper_madds_m']:.0f}",
             f"{r['paper_params_m']}", f"{r['paper_top1']}%",
             f"{r['latency_ms']:.2f} ({r['latency_iqr_ms']:.2f})")
            for r in rows]
    return format_columns(header, body)


def _figures(cfg: ReproduceConfig, run_dir: Path) -> None:
    rows = reference_figures(cfg.latency)
    print(figures_table(rows))
    large, small = (r["latency_ms"] for r in rows)
    print(f"\nLarge/Small latency ratio {large / small:.2f} (2-core x86 reference: ~2.8x at ~18 / ~6 ms); "
          f"protocol: {json.dumps(rows[0]['protocol'])}")
    atomic_write_text(run_dir / "figures.json", json.dumps(rows, indent=2) + "\n")
    print(f"written {run_dir / 'figures.json'}")


def trainer_preset(name: str, where: str) -> TrainConfig:
    """The trainer preset ``conf/trainer/<name>.yaml``; a ConfigError naming ``where`` and the
    presets there when it does not exist."""
    return preset("trainer", name, TrainConfig, where)


def _train(cfg: ReproduceConfig, run_dir: Path, reference: str) -> None:
    from search.training_job import TrainOptions, prepare_job, run_training

    options = TrainOptions(arch=cfg.arch or reference, data=cfg.data, trainer=cfg.trainer,
                           weights=cfg.weights)
    run_training(prepare_job(options, run_dir))  # writes into this run dir


def _search(cfg: ReproduceConfig, run_dir: Path, reference: str) -> None:
    from evaluators.data import load_dataset
    from evaluators.training import fit
    from search.pipeline import prepare_search, run_pipeline
    from search.run_record import read_run_record

    compare = cfg.compare
    trainer = trainer_preset(compare.trainer, "compare.trainer").replace(steps=compare.steps, progress=False)
    # the V3 recipe (3 warm-up epochs from 1% lr, EMA 0.9999) leaves short proxies at chance
    search_trainer = cfg.search_trainer
    proxy_trainer = trainer_preset(search_trainer, "search_trainer")
    print(f"search and NetAdapt train with the {search_trainer!r} trainer preset")
    job = prepare_search(cfg, trainer=proxy_trainer)
    run_pipeline(job, run_dir)
    found = read_run_record(run_dir / "refine") or read_run_record(run_dir)  # refined, else the search's
    if found is None:
        raise RunFailure(f"the search in {run_dir} found no candidate to compare (see its candidates.txt)")
    winner = found.spec
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


def run(cfg: ReproduceConfig) -> None:
    action, reference = cfg.action, cfg.reproduce.reference
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if action == "figures":
        _figures(cfg, run_dir)
    elif action == "train":
        _train(cfg, run_dir, reference)
    elif action == "evaluate":
        from search.evaluate_weights import evaluate_weights

        evaluate_weights(cfg.evaluate, cfg.weights, cfg.data, run_dir, reference)
    else:
        _search(cfg, run_dir, reference)
