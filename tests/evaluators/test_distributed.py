"""Data-parallel training on 2 CPU processes (gloo), against one process with the combined batch.

One ``torch.multiprocessing.spawn`` of 2 ranks runs every scenario once (session fixture); the tests
compare what the ranks saved with single-process runs in this process.

Batch norm: each rank normalizes its own shard (sync_bn needs CUDA), which differs from normalizing
the combined batch, so the 2-vs-1 equality uses a BN-free network; networks with batch norm are
checked for exact resume and for identical replicas instead.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from evaluators.data import DataConfig, load_dataset
from evaluators.data.loader import shard_slice
from evaluators.supernet import SuperNet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.train import train_supernet
from evaluators.training import TrainConfig, fit
from evaluators.training.trainer import TrainingRun, train_run
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError
from search_spaces.space import SearchSpace

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo"),
]

WORLD = 2
DATA = DataConfig(num_classes=4, train_size=96, test_size=16, val_size=32)  # 64 train, 32 val
TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
SEED_SPEC = ("in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k5_e24_c16_s2_hs ir_k3_e32_c16_s1_hs "
             "head_c32_h48_hs_d0.2_n4")
# global batch 15 over 2 ranks: shards of 8 and 7 images, so the loss weighting matters
PLAIN = TrainConfig(steps=6, batch_size=15, optimizer="sgd", lr=0.05, label_smoothing=0.1, warmup_epochs=0.5,
                    eval_every=3, ema_decay=0.0, bn_recalibrate=0, progress=False)
RESUMABLE = TrainConfig(steps=12, batch_size=16, optimizer="sgd", lr=0.05, warmup_epochs=0.5, progress=False,
                        eval_every=2, checkpoint_every=4, ema_decay=0.9)
# Float sums are ordered differently across 2 processes (all-reduce) than in one: after 6 SGD
# steps the weights (|w| ~ 0.1-0.5) of the two runs agree to ~1e-7; a shard seen twice or a
# wrongly weighted loss moves them by > 1e-3.
WEIGHT_TOLERANCE = 1e-5


class Interrupted(Exception):
    pass


class HandRun(TrainingRun):
    """Gradients averaged by hand, as the supernet's sandwich does (no DDP wrapper)."""

    ddp_wrap = False


def bn_free(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 4))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(from_string(TINY))


def count_images(model: nn.Module) -> dict[str, int]:
    """Images the model forwards in training steps (with gradients) and in evaluations (in eval
    mode), counted by a hook (batch-norm re-estimation, in train mode without gradients, is neither)."""
    seen = {"train": 0, "eval": 0}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.training and torch.is_grad_enabled():
            seen["train"] += args[0].shape[0]
        elif not module.training:
            seen["eval"] += args[0].shape[0]

    model.register_forward_pre_hook(hook)
    return seen


def plain_run(run_class: type[TrainingRun]) -> dict[str, Any]:
    model, evals = bn_free(), []
    seen = count_images(model)
    run = run_class(model, load_dataset(DATA), PLAIN, "val")
    result = train_run(run, on_eval=lambda step, r: evals.append((step, r.count, r.top1, r.loss)))
    return {"weights": model.state_dict(), "history": result.history, "seen": dict(seen), "evals": evals}


def resumed_run(out: Path) -> dict[str, Any]:
    data = load_dataset(DATA)
    full_model = tiny()
    seen = count_images(full_model)
    full = fit(full_model, data, RESUMABLE, checkpoint_dir=out / "full")

    def kill_at_step_10(step: int, _: Any) -> None:
        if step == 10:  # the last checkpoint is at step 8
            raise Interrupted

    try:
        fit(tiny(), data, RESUMABLE, checkpoint_dir=out / "cut", on_eval=kill_at_step_10)
    except Interrupted:
        pass
    resumed_model = tiny(seed=123)  # the checkpoint's weights must win
    resumed = fit(resumed_model, data, RESUMABLE, checkpoint_dir=out / "cut", resume=True)
    return {"full": full_model.state_dict(), "resumed": resumed_model.state_dict(), "seen": dict(seen),
            "full_history": full.history, "resumed_history": resumed.history}


def supernet_run() -> dict[str, Any]:
    space = SearchSpace(from_string(SEED_SPEC), widths=(0.75, 1.0), expansions=(0.5, 1.0))
    torch.manual_seed(0)
    net = SuperNet(space)
    seen = count_images(net)
    cfg = TrainConfig(steps=3, batch_size=16, optimizer="sgd", lr=0.05, eval_every=3, bn_recalibrate=1,
                      progress=False)
    result = train_supernet(net, load_dataset(DATA), cfg, SupernetTrainConfig(num_random=1))
    return {"weights": net.state_dict(), "history": result.history, "seen": dict(seen)}


def sync_bn_error() -> str:
    try:
        TrainingRun(tiny(), load_dataset(DATA), PLAIN.replace(sync_bn=True), "val")
    except ConfigError as err:
        return str(err)
    return ""


def job_run(out: Path, rank: int) -> None:
    from search.training_job import TrainOptions, prepare_job, run_training

    options = TrainOptions(arch=TINY, data=DATA, trainer=RESUMABLE.replace(steps=4, checkpoint_every=0))
    run_training(prepare_job(options, out / f"job_rank{rank}"))  # each rank names its own dir


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    root = Path(out)
    try:
        results = {"ddp": plain_run(TrainingRun), "by_hand": plain_run(HandRun),
                   "resume": resumed_run(root), "supernet": supernet_run(), "sync_bn": sync_bn_error()}
        job_run(root, rank)
        torch.save(results, root / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return plain_run(TrainingRun)


def assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        difference = (got[name] - expected[name]).abs().max().item()
        assert difference <= WEIGHT_TOLERANCE, (name, difference)


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("path", ["ddp", "by_hand"])
def test_two_processes_train_like_one_with_the_combined_batch(ranks, single, path):
    _, results = ranks
    for rank, result in enumerate(results):
        assert_close(result[path]["weights"], single["weights"])
        # each rank forwarded only its shard of every global batch of 15 (8 + 7 images)
        assert result[path]["seen"]["train"] == PLAIN.steps * len(range(15)[shard_slice(15, rank, WORLD)])
    assert single["seen"]["train"] == PLAIN.steps * PLAIN.batch_size
    for got, expected in zip(results[0][path]["history"], single["history"], strict=True):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)


def test_evaluation_is_reduced_over_the_whole_split(ranks, single):
    _, results = ranks
    evals = [r["ddp"]["evals"] for r in results]
    assert evals[0] == evals[1]  # every rank gets the same, reduced, result
    assert [count for _, count, _, _ in evals[0]] == [32, 32]  # the whole validation split
    for (step, _, top1, loss), (step1, _, top1_single, loss_single) in zip(evals[0], single["evals"],
                                                                           strict=True):
        assert step == step1 and top1 == top1_single and loss == pytest.approx(loss_single, rel=1e-5)
    for result in results:  # ...though each rank evaluated only its half of it
        assert result["ddp"]["seen"]["eval"] == 2 * 16


def test_killed_two_process_run_resumes_to_the_uninterrupted_weights(ranks):
    _, results = ranks
    for result in results:
        resume = result["resume"]
        assert_same(resume["resumed"], resume["full"])
        assert without_seconds(resume["resumed_history"]) == without_seconds(resume["full_history"])
        assert resume["seen"]["train"] == RESUMABLE.steps * 8  # half of each batch of 16
    assert_same(results[1]["resume"]["full"], results[0]["resume"]["full"])  # the replicas agree


def test_supernet_replicas_stay_identical_and_train_on_shards(ranks):
    _, results = ranks
    assert_same(results[1]["supernet"]["weights"], results[0]["supernet"]["weights"])
    histories = [without_seconds(r["supernet"]["history"]) for r in results]
    assert histories[0] == histories[1]
    for result in results:  # 3 steps of a sandwich of 2 or 3 sub-networks, each on half of 16 images
        assert result["supernet"]["seen"]["train"] in {3 * k * 8 for k in (2, 3)}
        assert result["supernet"]["seen"]["eval"] == 3 * 16  # 3 sizes validated, half of 32 images each


def test_rank_zero_alone_writes_the_run_files_into_its_run_dir(ranks):
    out, _ = ranks
    assert not (out / "job_rank1").exists()  # rank 1's own (e.g. Hydra-timestamped) dir stays unused
    files = {p.name for p in (out / "job_rank0").iterdir()}
    assert {"spec.json", "run_config.json", "checkpoint.pt", "weights.safetensors", "metrics.json"} <= files
    metrics = json.loads((out / "job_rank0" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["budget"]["batch_size"] == 16


def test_sync_bn_on_cpu_processes_is_a_one_line_config_error(ranks):
    _, results = ranks
    for result in results:
        assert result["sync_bn"].startswith("trainer.sync_bn: SyncBatchNorm runs on CUDA only")
        assert "\n" not in result["sync_bn"]
