"""Several processes (gloo on the CPU, for real): torchrun's variables, sharding and gathering,
and the sharded loss whose averaged gradients are exactly one process's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lungdemo.device import DeviceError
from tests.conftest import free_port
from train.augment import AugmentConfig, apply_augment, augment_batch, draw_augment
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
    min_global_batch,
    shard,
    shard_cross_entropy,
    unwrap,
    wrap_model,
)

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
    draw = draw_augment(len(images), cfg, torch.Generator().manual_seed(5))
    assert torch.equal(apply_augment(images, draw), whole)
    for rank in range(WORLD):
        mine = torch.arange(len(images))[rank::WORLD]
        assert torch.equal(apply_augment(images[mine], draw.rows(mine)), whole[mine])


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
