"""train.loop: seeding, the run folder checks, and the epoch loop both training commands run."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import train.checkpoint as ckpt
from lungdemo.errors import LungdemoError
from train.augment import AugmentConfig
from train.config import TeacherConfig, TrainConfig
from train.engine import EpochConfig, Split, TrainingParts
from train.loop import HISTORY_NAME, RunError, fit, prepare_out_dir, resume_config, seed_everything, start

SIZE = 32


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_seed_everything_seeds_python_numpy_and_torch() -> None:
    gen = seed_everything(7)
    first, first_gen = draws(), torch.rand(3, generator=gen)
    gen = seed_everything(7)
    assert draws() == first and torch.equal(torch.rand(3, generator=gen), first_gen)
    seed_everything(8)
    assert all(a != b for a, b in zip(draws(), first, strict=True))


def test_start_sets_threads_then_seeds(tmp_path: Path) -> None:
    cfg = TeacherConfig(data_dir=tmp_path, out=tmp_path, threads=1, seed=3)
    gen = start(cfg)
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=torch.Generator().manual_seed(3)))


def test_run_errors_are_lungdemo_errors() -> None:
    assert issubclass(RunError, LungdemoError)


def tiny_run(tmp_path: Path, lr: float, epochs: int, **cfg_kwargs) -> tuple[dict, TrainConfig]:
    """fit() on 8 random slices with a linear model; lr 0 keeps validation F1 constant."""
    g = torch.Generator().manual_seed(0)
    train = Split(torch.randint(0, 256, (8, 1, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.arange(8) % 4)
    valid = Split(torch.randint(0, 256, (4, 1, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.arange(4))
    cfg = TrainConfig(data_dir=tmp_path, out=tmp_path / "run", image_size=SIZE, epochs=epochs, **cfg_kwargs)
    (cfg.out / ckpt.CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    state = fit(
        TrainingParts(model, optimizer, nn.CrossEntropyLoss(), torch.Generator().manual_seed(0)),
        scheduler,
        train,
        valid,
        EpochConfig(cfg.preprocess, AugmentConfig(), 4),
        cfg,
        val_criterion=nn.CrossEntropyLoss(),
        command="test",
        patience=cfg_kwargs.get("patience"),
    )
    return state, cfg


def test_patience_stops_after_that_many_epochs_without_a_better_f1(tmp_path: Path) -> None:
    # lr 0: the model never changes, so epoch 1 is the best and every later epoch is stale
    state, cfg = tiny_run(tmp_path, lr=0.0, epochs=10, patience=3)
    assert state["epoch"] == 4 and state["best_epoch"] == 1 and state["stopped_early"]
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert ckpt.load_last(cfg.out / ckpt.CHECKPOINT_DIR)["state"]["epoch"] == 4
    assert [h["epoch"] for h in json.loads((cfg.out / HISTORY_NAME).read_text())] == [1, 2, 3, 4]


def test_without_patience_every_epoch_runs(tmp_path: Path) -> None:
    state, _ = tiny_run(tmp_path, lr=0.0, epochs=5)
    assert state["epoch"] == 5 and not state["stopped_early"] and state["best_epoch"] == 1


def test_every_epoch_is_checkpointed_with_the_config_and_rng_states(tmp_path: Path) -> None:
    _, cfg = tiny_run(tmp_path, lr=0.1, epochs=2)
    saved = ckpt.load_last(cfg.out / ckpt.CHECKPOINT_DIR)
    assert {"model", "optimizer", "scheduler", "gen_state", "torch_rng", "state", "args", "command"} <= saved.keys()
    assert TrainConfig.from_json(saved["args"]) == cfg and saved["command"] == "test"
    assert saved["state"]["epoch"] == 2 and (cfg.out / ckpt.CHECKPOINT_DIR / ckpt.BEST).is_file()


def test_resume_config_reads_the_stored_config_with_its_types(tmp_path: Path) -> None:
    stored = TrainConfig(data_dir=tmp_path / "data", out=tmp_path / "run", teacher=(tmp_path / "teacher",), epochs=7)
    ckpt.save_atomic(
        {"args": stored.to_json(), "command": "python -m train ..."}, tmp_path / "run" / "checkpoints" / "last.pt"
    )
    given = TrainConfig(data_dir=tmp_path / "data", out=tmp_path / "run", resume=True)
    cfg, command = resume_config(given, "python -m train --resume")
    assert cfg == dataclasses.replace(stored, resume=True) and command == "python -m train ..."
    assert isinstance(cfg.teacher[0], Path) and isinstance(cfg.cache_dir, Path)
    # without --resume (or without a checkpoint) the given config stands
    fresh = dataclasses.replace(given, resume=False)
    assert resume_config(fresh, "cmd") == (fresh, "cmd")


def test_resume_from_a_checkpoint_with_unusable_arguments_is_a_run_error(tmp_path: Path) -> None:
    args = {**TrainConfig(data_dir=tmp_path, out=tmp_path / "run").to_json(), "epochs": "many"}
    ckpt.save_atomic({"args": args, "command": "c"}, tmp_path / "run" / "checkpoints" / "last.pt")
    with pytest.raises(RunError, match="holds unusable arguments: training argument 'epochs': expected int"):
        resume_config(TrainConfig(data_dir=tmp_path, out=tmp_path / "run", resume=True), "c")


def test_prepare_out_dir_refusals(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TeacherConfig(data_dir=tmp_path, out=out)
    done = out / "done.json"
    with pytest.raises(RunError, match=f"--resume: no checkpoint in {out / 'checkpoints'}"):
        prepare_out_dir(dataclasses.replace(cfg, resume=True), done, 0)
    prepare_out_dir(cfg, done, 0)  # creates the folder and its checkpoints/
    assert (out / "checkpoints").is_dir() and not [p for p in out.iterdir() if p.name.startswith(".")]
    ckpt.save_atomic({}, out / "checkpoints" / ckpt.LAST)
    with pytest.raises(RunError, match="holds an unfinished run: pass --resume to continue it or --overwrite"):
        prepare_out_dir(cfg, done, 0)
    done.write_text("{}")
    with pytest.raises(RunError, match=f"already holds a finished run \\({out}\\); pass --overwrite"):
        prepare_out_dir(cfg, done, 0)
    prepare_out_dir(dataclasses.replace(cfg, overwrite=True), done, 0)
