"""How many trials a search on a trained supernet does per second: ``proxy=supernet`` (each trial a
sub-network scored with batch norm re-estimated) vs ``proxy=predictor`` (an MLP fitted on supernet
scores at start-up), on the same supernet, space, data, latency table and sampler.

Prints, per proxy: trials, wall time of the search (start-up -- data, predictor fit -- separately),
trials per second, the mean seconds the proxy spent per trial, and the best reward found. The
supernet is ``--run`` (a ``mobilenas supernet action=train`` run dir); without it a small one is
trained first on the embedded synthetic set (an untrained-quality supernet: the figures here are
about speed, not about which architecture wins)::

    python benchmarks/supernet_search.py --trials 1000
    python benchmarks/supernet_search.py --run runs/supernet/2026-11-29/10-00-00 --trials 1000 --val 1000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evaluators.accuracy import ProxyConfig
from evaluators.data import DataConfig, load_dataset
from evaluators.latency import LatencyConfig
from evaluators.supernet import SuperNet, load_supernet, save_supernet
from search.components import SearchSettings, build_components
from search.objectives import ObjectiveConfig
from search.runner import run_search
from search.study import StudyConfig
from search_spaces.config import SpaceConfig, build_space
from search_spaces.serialize import atomic_write_text

SMALL_SPACE = SpaceConfig(seed="mobilenet_v3_small")


def untrained_supernet(root: Path, data: DataConfig) -> Path:
    """A supernet of the V3-Small space for ``data``, freshly initialized (speed figures only)."""
    splits = load_dataset(data)
    space = build_space(SMALL_SPACE, num_classes=splits.num_classes, resolution=splits.resolution,
                        in_channels=splits.in_channels)
    torch.manual_seed(0)
    run = root / "supernet"
    save_supernet(run, SuperNet(space), record={"data": data.__dict__})
    return run


def search_speed(kind: str, run: Path, data: DataConfig, space: SpaceConfig, trials: int, root: Path) -> dict:
    """Build the components (timed as start-up) and run ``trials`` trials (timed as the search)."""
    settings = SearchSettings(
        space=space, data=data, objective=ObjectiveConfig(mode="hard"), reference_points=False,
        proxy=ProxyConfig(kind=kind, supernet=str(run), val_subset=None, train_subset=None),
        latency=LatencyConfig(tables_dir=str(root / "tables")))
    started = time.perf_counter()
    components = build_components(settings)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    study = run_search(lambda: components, StudyConfig(name=kind, n_trials=trials), f"sqlite:///{root}/{kind}.db",
                       components=components, progress=True)
    wall = time.perf_counter() - started
    done = [t for t in study.trials if t.state.is_finished() and "eval_seconds" in t.user_attrs]
    rewards = [t.value for t in study.trials if t.value is not None]
    return {"proxy": kind, "trials": len(study.trials), "startup_s": startup, "wall_s": wall,
            "trials_per_s": len(study.trials) / wall,
            "proxy_s": statistics.mean(t.user_attrs["eval_seconds"] for t in done) if done else float("nan"),
            "best": max(rewards) if rewards else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="supernet run dir (default: a fresh, untrained one)")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--val", type=int, default=1000, help="validation images of the synthetic set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.run is not None:
            net, record = load_supernet(args.run)
            data, space, run = DataConfig(**record["data"]), SpaceConfig(**record["space_config"]), args.run
        else:
            data = DataConfig(train_size=2000 + args.val, val_size=args.val, test_size=100)
            space, run = SMALL_SPACE, untrained_supernet(root, data)
        rows = [search_speed(kind, run, data, space, args.trials, root) for kind in ("supernet", "predictor")]
    header = (f"{'proxy':<10} {'trials':>6} {'start-up s':>10} {'search s':>9} {'trials/s':>8} "
              f"{'proxy s/trial':>13} {'best':>7}")
    lines = [f"{args.threads} thread(s), {data.name} ({args.val} val images at {data.resolution}x"
             f"{data.resolution}), space around {space.seed}", header, "-" * len(header)]
    lines += [f"{r['proxy']:<10} {r['trials']:>6} {r['startup_s']:>10.1f} {r['wall_s']:>9.1f} "
              f"{r['trials_per_s']:>8.2f} {r['proxy_s']:>13.4f} {r['best']:>7.4f}" for r in rows]
    speedup = rows[1]["trials_per_s"] / rows[0]["trials_per_s"]
    lines.append(f"predictor / supernet trials per second: {speedup:.1f}x")
    print("\n".join(lines))
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
