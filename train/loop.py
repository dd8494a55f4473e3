"""The one training loop the student (``python -m train``) and the teacher (``python -m train.teacher``) run.

Both seed the same way, refuse to clobber a run, checkpoint every epoch (``checkpoints/last.pt``
with every RNG state, so ``--resume`` ends where an uninterrupted run would), keep the best
weights by validation macro-F1 and stop early after ``patience`` epochs without a better one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from lungdemo.atomic import write_json
from lungdemo.device import Precision, choose_precision, describe_device, model_to_device
from lungdemo.errors import LungdemoError
from lungdemo.metrics import classification_metrics
from train import checkpoint as ckpt
from train.config import RunConfig
from train.data import CLASS_NAMES
from train.distributed import DistContext, gather_objects, init_distributed, quiet_unless_main, unwrap, wrap_model
from train.engine import EpochConfig, Split, TrainingParts, predict_split, train_one_epoch

logger = logging.getLogger(__name__)

HISTORY_NAME = "history.json"
C = TypeVar("C", bound=RunConfig)


class RunError(LungdemoError, RuntimeError):
    """A problem with the run's arguments or output folder, found before training starts."""


def start_logging() -> None:
    """Timestamped INFO logging for the training command lines (student and teacher)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; the returned generator drives shuffling and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start(cfg: RunConfig) -> torch.Generator:
    """Thread count, then seeds: the same for every run, so a command reproduces its weights."""
    if cfg.threads:  # results are bit-identical only for the same thread count
        torch.set_num_threads(cfg.threads)
    return seed_everything(cfg.seed)


def start_devices(cfg: RunConfig) -> tuple[DistContext, Precision]:
    """The device (a missing one fails here, at once), torchrun's process group if any, and the precision."""
    ctx = init_distributed(cfg.device)
    quiet_unless_main(ctx)
    precision = choose_precision(ctx.device, requested=cfg.precision)
    processes = f", {ctx.world_size} processes ({ctx.backend})" if ctx.enabled else ""
    logger.info("device: %s, %s%s", describe_device(ctx.device), precision.name, processes)
    return ctx, precision


def device_record(ctx: DistContext, precision: Precision) -> dict[str, Any]:
    """What ``training_args.json`` says about where and how the run computed."""
    return {"device": describe_device(ctx.device), "precision": precision.name, **ctx.summary()}


def place(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    gen: torch.Generator,
    ctx: DistContext,
    precision: Precision,
    seed: int,
) -> TrainingParts:
    """The model on the device (DDP-wrapped under torchrun) with what an epoch needs.

    Processes other than rank 0 reseed torch's own RNG, so their dropout masks differ; the
    generator ``gen`` (order, augmentation) stays the same in every process.
    """
    model_to_device(model, ctx.device)
    if ctx.rank:
        torch.manual_seed(seed + ctx.rank)
    scaler = precision.grad_scaler() if precision.needs_scaler else None
    return TrainingParts(wrap_model(model, ctx), optimizer, criterion, gen, ctx, precision, scaler)


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / ckpt.CHECKPOINT_DIR


def prepare_out_dir(cfg: RunConfig, finished: Path, need_bytes: int) -> None:
    """Refuse to clobber a finished run; check the folder has room and is writable, now.

    ``finished`` is the file a completed run leaves. The disk-space check runs first, on the
    nearest folder that exists, so a full disk is reported before anything is created (not
    after an hour of training, and without leaving an empty run folder behind).
    """
    out = cfg.out
    last = checkpoint_dir(out) / ckpt.LAST
    if cfg.resume:
        if not last.is_file():
            raise RunError(f"--resume: no checkpoint in {checkpoint_dir(out)}")
    elif finished.exists() and not cfg.overwrite:
        raise RunError(f"{out} already holds a finished run ({finished.parent}); pass --overwrite to replace it")
    elif last.exists() and not cfg.overwrite:
        raise RunError(f"{out} holds an unfinished run: pass --resume to continue it or --overwrite to restart")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        raise RunError(f"output folder {out} is not usable: {exc.strerror or exc}") from exc
    if free < need_bytes:
        raise RunError(
            f"not enough disk space in {out}: {free / 2**20:.0f} MiB free, about {need_bytes / 2**20:.0f} needed"
        )
    try:
        checkpoint_dir(out).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc


def disk_need(params: int) -> int:
    """Bytes a run needs: model, two Adam moments, best weights and the folder, plus plots and cache."""
    return params * 4 * 5 + 200 * 2**20


def resume_config(cfg: C, command: str) -> tuple[C, str]:
    """With ``--resume`` and a checkpoint: the configuration and command stored in it."""
    if not (cfg.resume and (checkpoint_dir(cfg.out) / ckpt.LAST).is_file()):
        return cfg, command
    saved = ckpt.load_last(checkpoint_dir(cfg.out))
    logger.info("--resume: continuing with the arguments stored in the checkpoint")
    try:
        stored = type(cfg).from_json(saved["args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"--resume: the checkpoint in {checkpoint_dir(cfg.out)} holds unusable arguments: {exc}"
        ) from exc
    return dataclasses.replace(stored, resume=True, overwrite=False), saved["command"]


def rng_states(ctx: DistContext) -> dict[str, Any]:
    """What a checkpoint holds beyond rank 0's CPU RNG state: every process's CPU and CUDA RNG states.

    Empty for one CPU process, so its checkpoint stays as it was. Dropout draws from these.
    """
    if not ctx.enabled and ctx.device.type != "cuda":
        return {}
    own = {"cpu": torch.get_rng_state(), "cuda": None}
    if ctx.device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return {"rng_ranks": gather_objects(own, ctx)}


def restore_rng(saved: dict[str, Any], ctx: DistContext) -> None:
    """This process's RNG states from a checkpoint (rank 0's CPU state when it was run with fewer processes)."""
    ranks = saved.get("rng_ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        torch.set_rng_state(ranks[ctx.rank]["cpu"])
        if ctx.device.type == "cuda" and ranks[ctx.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(ranks[ctx.rank]["cuda"], ctx.device)
        return
    if ranks is not None:
        logger.warning("resuming with %d processes, not %d: dropout draws anew", ctx.world_size, len(ranks))
    torch.set_rng_state(saved["torch_rng"])


def fit(
    parts: TrainingParts,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: Split,
    valid: Split,
    epoch_cfg: EpochConfig,
    config: RunConfig,
    *,
    val_criterion: nn.Module,
    command: str,
    patience: int | None = None,
) -> dict[str, Any]:
    """Train ``config.epochs`` epochs, or until ``patience`` epochs bring no better validation macro-F1.

    Returns the bookkeeping (best epoch, history, elapsed, stopped_early). With
    ``config.resume`` it first restores model, optimizer, scheduler and RNG states from the
    checkpoint. The best weights are in ``checkpoints/best.safetensors`` afterwards.
    """
    ckpt_dir = checkpoint_dir(config.out)
    epochs = config.epochs
    optimizer, gen, ctx = parts.optimizer, parts.gen, parts.ctx
    model = unwrap(parts.model)  # the weights themselves: evaluation, state dicts
    state: dict[str, Any] = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "stale": 0, "history": [], "elapsed": 0.0}
    if config.resume:
        saved = ckpt.load_last(ckpt_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["gen_state"])
        restore_rng(saved, ctx)
        if parts.scaler is not None and "scaler" in saved:
            parts.scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        logger.info(
            "resumed from epoch %d (best %.4f at epoch %d)", state["epoch"], state["best_f1"], state["best_epoch"]
        )
    stale_limit = patience if patience is not None else epochs + 1
    while state["epoch"] < epochs and state["stale"] < stale_limit:
        epoch = state["epoch"] + 1
        t0 = time.time()
        loss = train_one_epoch(parts, train, epoch_cfg, epoch)
        scheduler.step()
        logits = predict_split(model, valid.images, epoch_cfg.pre, ctx)
        val = classification_metrics(valid.labels.numpy(), logits.argmax(1).numpy(), CLASS_NAMES)
        val_loss = float(val_criterion(logits, valid.labels))
        f1 = val["macro"]["f1"]
        improved = f1 > state["best_f1"]  # every process has the same gathered logits: the same choice
        if improved:
            state.update(best_f1=f1, best_epoch=epoch, stale=0)
            if ctx.is_main:
                ckpt.save_best(model.state_dict(), ckpt_dir)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        state["elapsed"] += time.time() - t0
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "val_loss": val_loss,
                "val_accuracy": val["accuracy"],
                "val_macro_f1": f1,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.time() - t0,
            }
        )
        rng = rng_states(ctx)  # a collective under torchrun: every process takes part
        if ctx.is_main:
            ckpt.save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "gen_state": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "state": state,
                    "args": config.to_json(),
                    "command": command,
                    **rng,
                    **({"scaler": parts.scaler.state_dict()} if parts.scaler is not None else {}),
                },
                ckpt_dir / ckpt.LAST,
            )
            write_json(config.out / HISTORY_NAME, state["history"])
        logger.info(
            "epoch %d/%d  train loss %.4f  val loss %.4f  val acc %.3f  val macro-F1 %.3f%s  (%.0fs)",
            epoch,
            epochs,
            loss,
            val_loss,
            val["accuracy"],
            f1,
            "  *best*" if improved else "",
            time.time() - t0,
        )
    state["stopped_early"] = state["epoch"] < epochs
    if state["stopped_early"]:
        logger.info("early stop: no better validation macro-F1 for %d epochs", patience)
    return state
