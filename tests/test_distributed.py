"""Several processes (gloo on the CPU, for real): torchrun's variables, sharding and gathering,
and the sharded loss whose averaged gradients are exactly one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from lungdemo.device import DeviceError
from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import PreprocessConfig
from tests.conftest import free_port
from tests.training_helpers import fake_dataset, small_args
from train.augment import AugmentConfig, apply_params, augment_batch, sample_params
from train.data import CLASS_NAMES
from train.distributed import (
    DistContext,
    DistributedError,
    all_sum,
    backend_for,
    broadcast_object,
    cleanup,
    env_ranks,
    eval_rows,
    gather_objects,
    gather_rows,
    init_distributed,
    is_main_process,
    launch_command,
    min_global_batch,
    shard,
    shard_cross_entropy,
    unwrap,
    wrap_model,
)

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def test_no_torchrun_is_one_process() -> None:
    assert env_ranks({}) == (0, 1, 0)
    ctx = init_distributed("cpu", env={})
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.backend) == (0, 1, False, True, None)
    assert ctx.device == torch.device("cpu")
    rows = torch.arange(7)
    assert torch.equal(shard(rows, ctx), rows) and torch.equal(eval_rows(7, ctx), rows)
    assert gather_rows(rows, 7, ctx) is rows and broadcast_object("x", ctx) == "x"
    assert float(all_sum(2.5, ctx)) == 2.5 and gather_objects(3, ctx) == [3]
    model = nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model and unwrap(model) is model
    cleanup(ctx)  # nothing to leave


def test_torchrun_with_one_process_is_one_process() -> None:
    ctx = init_distributed("auto", env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert not ctx.enabled and ctx.backend is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LOCAL_RANK": "0"}, "not all of RANK and WORLD_SIZE"),
        ({"RANK": "0"}, "not all of RANK and WORLD_SIZE"),
        ({"RANK": "a", "WORLD_SIZE": "2"}, "not integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "do not fit together"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "do not fit together"),
    ],
)
def test_bad_torchrun_environment(env: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        env_ranks(env)


def test_device_choice_under_torchrun() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    with pytest.raises(DistributedError, match="would put all 2 processes on one GPU"):
        init_distributed("cuda:1", env=env)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            init_distributed("cuda", env=env)
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0)) == "nccl"
    with pytest.raises(DistributedError, match="no backend for mps"):
        backend_for(torch.device("mps"))


def test_shards_of_a_global_batch_cover_it_once() -> None:
    rows = torch.arange(10, 17)
    parts = [shard(rows, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == rows.tolist()
    assert parts[1].tolist() == [11, 14]
    assert min_global_batch(DistContext()) == 2 and min_global_batch(DistContext(rank=0, world_size=4)) == 4


def test_augmenting_a_shard_gives_those_rows_of_the_batch() -> None:
    """Every process draws the global batch's augmentation and applies its own rows: the same pixels."""
    images = torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cfg = AugmentConfig()
    whole = augment_batch(images, cfg, torch.Generator().manual_seed(5))
    draw = sample_params(len(images), cfg, torch.Generator().manual_seed(5), shape=tuple(images.shape))
    assert torch.equal(apply_params(images, draw), whole)
    for rank in range(WORLD):
        mine = torch.arange(len(images))[rank::WORLD]
        assert torch.equal(apply_params(images[mine], draw.rows(mine)), whole[mine])


def tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, nn.CrossEntropyLoss]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(7, 5)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    crit = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0]), label_smoothing=0.1)
    return model, x, y, crit


def one_process_gradients() -> dict[str, torch.Tensor]:
    model, x, y, crit = tiny_problem()
    crit(model(x), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = {"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)}
    ctx = init_distributed("cpu", env=env)
    try:
        assert ctx.backend == "gloo" and ctx.enabled
        model, x, y, crit = tiny_problem()
        ddp = wrap_model(model, ctx)
        mine = shard(torch.arange(len(x)), ctx)
        loss = shard_cross_entropy(crit, ddp(x[mine]), y[mine], y, ctx)
        loss.backward()
        # validation: 5 rows split 3 + 2 (padded), gathered back in order on every process
        rows = eval_rows(5, ctx)
        gathered = gather_rows(torch.stack([rows * 10.0, rows + 0.5], 1), 5, ctx)
        result = {
            "grads": {k: p.grad.clone() for k, p in unwrap(ddp).named_parameters()},
            "loss_sum": float(all_sum(loss.item() / ctx.world_size, ctx)),
            "rows": rows,
            "gathered": gathered,
            "objects": gather_objects({"rank": ctx.rank}, ctx),
            "broadcast": broadcast_object(f"from {ctx.rank}", ctx),
        }
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup(ctx)


def test_two_gloo_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    expected = one_process_gradients()
    model, x, y, crit = tiny_problem()
    whole_loss = crit(model(x), y).item()
    for r, res in enumerate(results):
        for k, g in expected.items():
            torch.testing.assert_close(res["grads"][k], g, rtol=1e-5, atol=1e-6, msg=f"rank {r} {k}")
        assert res["loss_sum"] == pytest.approx(whole_loss, rel=1e-6)
        want = torch.arange(5, dtype=torch.float32)
        assert torch.equal(res["gathered"], torch.stack([want * 10.0, want + 0.5], 1))
        assert res["objects"] == [{"rank": 0}, {"rank": 1}]
        assert res["broadcast"] == "from 0"
    assert results[0]["rows"].tolist() == [0, 2, 4] and results[1]["rows"].tolist() == [1, 3, 0]


# --- the real command line: torchrun with two gloo processes against one process --------------------------------

TRAIN_COUNTS = [5, 3, 4, 4]  # unequal: the class weights are not all 1
EXTRA = ["--batch-size", "8", "--mixup", "0.4", "--label-smoothing", "0.1", "--device", "cpu", "--skip-test"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
RUN_TIMEOUT_S = 600


def train_cmd(launcher: list[str], data: Path, out: Path, cache: Path, *extra: str, epochs: int = 1) -> Path:
    """Run ``-m train`` under ``launcher`` (``python`` or torchrun); its output folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    argv = [*launcher, "-m", "train", *small_args(data, out, cache, *extra, epochs=epochs)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    data = fake_dataset(root / "data", {"train": TRAIN_COUNTS, "valid": [2, 2, 2, 2], "test": [1, 1, 1, 1]})
    return data, root / "cache"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def record(run: Path, name: str) -> dict:
    return json.loads((run / "model" / name).read_text())


def test_two_processes_train_what_one_process_trains(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    """Same data, global batch, order and augmentation: after an epoch the weights agree to float rounding.

    Dropout is off: its masks are drawn per process (that is the one intended difference).
    """
    data, cache = tiny_data
    one = train_cmd([sys.executable], data, tmp_path / "one", cache, *EXTRA, "--dropout", "0")
    two = train_cmd(TORCHRUN, data, tmp_path / "two", cache, *EXTRA, "--dropout", "0")
    w1, w2, w0 = weights(one), weights(two), start_weights()
    assert w1.keys() == w2.keys() == w0.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=2e-6, msg=k)
        # training moved the weights far more than the two runs differ
        assert (w2[k] - w1[k]).abs().max() < 0.01 * (w1[k] - w0[k]).abs().max(), k
    a1, a2 = record(one, "training_args.json"), record(two, "training_args.json")
    for key in ("class_weights", "train_counts", "valid_count", "best_epoch", "epochs_run"):
        assert a1[key] == a2[key], key
    assert len(set(a1["class_weights"].values())) > 1
    assert (a1["compute"]["world_size"], a2["compute"]["world_size"]) == (1, WORLD)
    assert a2["compute"]["backend"] == "gloo"
    assert a2["command"].startswith(f"torchrun --standalone --nproc_per_node {WORLD} -m train ")
    assert a1["command"].startswith("python -m train ")
    h1, h2 = record(one, "history.json"), record(two, "history.json")
    assert h2[0]["train_loss"] == pytest.approx(h1[0]["train_loss"], rel=1e-5)
    assert h2[0]["val_loss"] == pytest.approx(h1[0]["val_loss"], rel=1e-5)
    m1, m2 = record(one, "metrics.json"), record(two, "metrics.json")
    assert m1["validation"]["confusion_matrix"] == m2["validation"]["confusion_matrix"]
    assert sorted(p.name for p in (one / "model").iterdir()) == sorted(p.name for p in (two / "model").iterdir())


def start_weights() -> dict[str, torch.Tensor]:
    """The seeded initial weights of the runs here (seed 0, 64x64 input, a 32-wide head)."""
    torch.manual_seed(0)
    cfg = PreprocessConfig(image_size=64)
    return LungAlexNet(class_names=list(CLASS_NAMES), hidden=32, preprocessing=cfg.to_dict()).state_dict()


def test_resume_under_torchrun_ends_where_an_uninterrupted_run_does(
    tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two epochs at once, or one epoch, a stop and ``--resume``: the same weights, bit for bit.

    Dropout is on, so each process's own RNG state must come back from the checkpoint.
    """
    data, cache = tiny_data
    whole = train_cmd(TORCHRUN, data, tmp_path / "whole", cache, *EXTRA, epochs=2)
    part = train_cmd(TORCHRUN, data, tmp_path / "part", cache, *EXTRA, epochs=1)
    # make the one-epoch run a two-epoch run stopped after its first epoch (the learning rate
    # of epoch 2 is the same for both schedules: the warm-up ends with epoch 1)
    last = part / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=True)
    assert len(saved["rng_ranks"]) == WORLD
    saved["args"]["epochs"] = 2
    torch.save(saved, last)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*TORCHRUN, "-m", "train", "--data-dir", str(data), "--out", str(part), "--resume"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from epoch 1" in proc.stderr
    w_whole, w_part = weights(whole), weights(part)
    for k in w_whole:
        assert torch.equal(w_whole[k], w_part[k]), k
    assert record(part, "metrics.json") == record(whole, "metrics.json")


def test_the_recorded_command_names_the_launcher() -> None:
    argv = ["--data-dir", "my data", "--epochs", "2"]
    assert launch_command("train", argv, env={}) == "python -m train --data-dir 'my data' --epochs 2"
    env = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}
    assert launch_command("train.teacher", argv[:2], env=env) == (
        "torchrun --standalone --nproc_per_node 4 -m train.teacher --data-dir 'my data'"
    )
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert launch_command("train", [], env=env) == "torchrun --nnodes 2 --nproc_per_node 4 -m train "
    assert is_main_process({}) and not is_main_process(env)
