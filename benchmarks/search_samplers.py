"""TPE vs random search at the same number of trials and the same proxy budget.

Runs the project's search (``search.runner.run_search``, hard latency budget, the seed
architecture enqueued as trial 0 of both) over the V3-Small space on the embedded synthetic set
at 32x32, once with ``study.sampler=tpe`` and once with ``random``, each in its own SQLite study
in a temporary directory, and prints for each sampler:

* best reward (``objective.reward``: accuracy when the latency target is met, MnasNet's hard
  penalty ``acc x (lat/target)^-1`` when not);
* best accuracy among the candidates that meet the target, and how many do (of those found);
* the hypervolume of the (accuracy, latency) front: the area dominated by the candidates'
  points (-accuracy, latency) -- both minimized -- up to the reference point (0, 1.5 x the
  seed's latency), i.e. accuracy above 0 and latency below 1.5 x the seed. It is printed as a
  fraction of the reference box (1 x 1.5 x seed latency), so 1.0 would be 100% accuracy at 0 ms;
  points slower than the reference are left out (they dominate nothing in the box).

and the ratio TPE / random of each figure. The config is ``conf/search.yaml`` composed with
Hydra, as ``mobilenas search`` composes it, with the benchmark's budget (``DEFAULTS`` below) and
then the command line's overrides on top; ``search.pipeline.settings_from`` and
``pin_target`` wire it exactly as the command does, so the latency target (``target_ratio`` x the
seed's LUT latency) is resolved once and both samplers search against the same number. Latency
is LUT-predicted with the thread-CPU timer (the machine is shared), measured on demand into
``tables/``. TPE's first ``study.n_startup_trials`` trials are random draws from the same seed,
so both searches share their first trials and differ only after. With ``--seeds 0 1 2`` each
sampler runs once per sampler seed (the proxy's training seed, ``study.seed``, stays fixed, so
every run scores a spec alike) and the table shows means.

At the default budget (50 proxy steps of batch 32, the fast recipe) the synthetic set's proxy
accuracies sit at 0.1-0.2 (chance: 0.1), so the default run mostly shows how each sampler
handles the latency constraint; for accuracy differences that mean something, give the proxy
more steps and the search more trials (hours on a CPU):

    python benchmarks/search_samplers.py                                   # ~6 min, one CPU thread
    python benchmarks/search_samplers.py study.n_trials=40 proxy.steps=300 trainer.batch_size=64 \\
        --seeds 0 1 2
    python benchmarks/search_samplers.py space.width_mult=0.5 data=cifar10 data.root=/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna._hypervolume import compute_hypervolume

from search.components import SearchSettings, build_components, pin_target
from search.pipeline import settings_from
from search.results import Candidate, candidates, winner
from search.runner import Components, run_search
from search.schema import compose_options
from search.study import StudyConfig
from search_spaces.printout import format_columns

SAMPLERS = ("tpe", "random")
# The benchmark's budget on top of conf/search.yaml (command-line overrides come after these).
DEFAULTS = [
    "space=v3_small", "data=synthetic", "objective=hard", "objective.target_ratio=0.85",
    "study.n_trials=20", "study.pruner=none",
    "proxy=train", "proxy.steps=50", "proxy.train_subset=1000", "proxy.val_subset=300", "proxy.reports=1",
    "trainer=fast", "trainer.batch_size=32", "trainer.progress=false",
    "latency=cpu", "latency.timer=thread_cpu", "results.reference_points=false",
]


def hypervolume(found: list[Candidate], reference_ms: float) -> float:
    """Area dominated by the points (-accuracy, latency) up to (0, ``reference_ms``), as a
    fraction of the box 1 x ``reference_ms``; points with latency >= ``reference_ms`` are left out."""
    points = np.array([(-c.accuracy, c.latency_ms) for c in found if c.latency_ms < reference_ms])
    points = points.reshape(-1, 2)  # also when empty
    return compute_hypervolume(points, np.array([0.0, reference_ms])) / reference_ms


@dataclass
class Outcome:
    sampler: str
    seed: int
    best_reward: float
    best_feasible_accuracy: float  # NaN when no candidate meets the target
    feasible: int
    found: int
    hypervolume: float
    seconds: float


def search_once(settings: SearchSettings, components: Components, study_cfg: StudyConfig, directory: Path,
                reference_ms: float) -> Outcome:
    """One search with ``study_cfg`` (its own SQLite study in ``directory``) and its figures."""
    url = f"sqlite:///{directory / f'{study_cfg.name}.db'}"
    settings = pin_target(components, settings, study_cfg, url)
    started = time.perf_counter()
    study = run_search(partial(build_components, settings), study_cfg, url, components=components,
                       progress=False)
    seconds = time.perf_counter() - started
    found = candidates(study, components.objective)
    feasible = [c for c in found if c.feasible]
    best = winner(found)
    return Outcome(study_cfg.sampler, study_cfg.seed, best.reward if best else float("nan"),
                   max((c.accuracy for c in feasible), default=float("nan")), len(feasible), len(found),
                   hypervolume(found, reference_ms), seconds)


def row(label: str, outcomes: list[Outcome]) -> tuple[str, ...]:
    def mean(key: str) -> float:
        return statistics.fmean(getattr(o, key) for o in outcomes)

    return (label, f"{mean('best_reward'):.4f}", f"{mean('best_feasible_accuracy'):.4f}",
            f"{mean('feasible'):.1f} / {mean('found'):.1f}", f"{mean('hypervolume'):.4f}",
            f"{mean('seconds'):.0f}")


def ratio_row(tpe: list[Outcome], random: list[Outcome]) -> tuple[str, ...]:
    def ratio(key: str) -> str:
        a, b = (statistics.fmean(getattr(o, key) for o in group) for group in (tpe, random))
        return f"{a / b:.3f}" if b else "n/a"

    return ("TPE / random", ratio("best_reward"), ratio("best_feasible_accuracy"), ratio("feasible"),
            ratio("hypervolume"), ratio("seconds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of conf/search.yaml, e.g. proxy.steps=300")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampler seeds (one search each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True

    settings, study_cfg, _, _ = settings_from(compose_options("search", DEFAULTS + args.overrides))
    components = build_components(settings)  # data loaded and target resolved once, shared by all runs
    space, objective, proxy = components.space, components.objective, settings.proxy
    seed_ms = components.latency(space.seed)
    reference_ms = 1.5 * seed_ms
    print(f"space around {settings.space.seed} x{settings.space.width_mult:g}: {space.size():.2e} "
          f"architectures; data {settings.data.name} at {space.seed.resolution}x{space.seed.resolution}\n"
          f"latency: {components.latency.describe()}\n"
          f"seed {seed_ms:.3f} ms, target {objective.target_ms:.3f} ms ({objective.mode} objective), "
          f"hypervolume reference (accuracy 0, {reference_ms:.3f} ms)\n"
          f"{study_cfg.n_trials} trials per search ({study_cfg.n_startup_trials} random before TPE), "
          f"pruner {study_cfg.pruner}; proxy {proxy.steps} steps x batch {settings.trainer.batch_size} "
          f"on {proxy.train_subset} images, val {proxy.val_subset}; sampler seeds {args.seeds}\n", flush=True)
    outcomes: dict[str, list[Outcome]] = {s: [] for s in SAMPLERS}
    with tempfile.TemporaryDirectory() as directory:
        for seed in args.seeds:
            for sampler in SAMPLERS:
                run_cfg = replace(study_cfg, name=f"{sampler}_seed{seed}", sampler=sampler, seed=seed,
                                  storage=None, workers=1)
                outcome = search_once(settings, components, run_cfg, Path(directory), reference_ms)
                outcomes[sampler].append(outcome)
                print(f"  {sampler:<6} seed {seed}: best reward {outcome.best_reward:.4f}, "
                      f"{outcome.feasible}/{outcome.found} feasible, {outcome.seconds:.0f} s", flush=True)
    header = ("sampler", "best reward", "best feasible acc", "feasible / found", "hypervolume", "seconds")
    mean = f" (mean of {len(args.seeds)})" if len(args.seeds) > 1 else ""
    print(format_columns(header, [*(row(s + mean, outcomes[s]) for s in SAMPLERS),
                                ratio_row(outcomes["tpe"], outcomes["random"])]))


if __name__ == "__main__":
    main()
