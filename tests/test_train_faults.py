"""Training faults: a run killed by a signal, a full disk, a model folder write that fails half-way.

The kill test runs ``python -m train`` as a child process on the real dataset (a tiny config:
6 images per class and split, 64x64 inputs, a 32-wide head, one thread), SIGKILLs it as soon
as the first epoch's checkpoint exists, resumes it with ``--resume`` and compares the final
``metrics.json`` with an uninterrupted run's. The other tests run in-process on fake data;
checkpoint writes that fail are in ``test_checkpoint.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lungdemo.folder as folder_mod
import train.checkpoint as ckpt
import train.loop as loop_mod
import train.train as train_mod
from lungdemo.loading import load_model
from tests.conftest import make_model, make_model_folder
from tests.training_helpers import error_line, fake_dataset, small_args
from train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
Usage = namedtuple("Usage", "total used free")  # what shutil.disk_usage returns
EPOCHS = 4
CHECKPOINT_WAIT_S = 600.0
"""Upper bound on the wait for the first checkpoint (decoding plus one epoch on a busy machine)."""


def run_cli(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "train", *argv], cwd=REPO, env=env, stdout=out, stderr=out)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


# --- a run killed by a signal resumes to the same result ---------------------------------------------


@pytest.mark.integration
def test_sigkill_then_resume_reaches_the_uninterrupted_metrics(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out_a, out_b = tmp_path / "uninterrupted", tmp_path / "killed"

    # A: uninterrupted (also fills the decoded-image cache both runs share)
    finish(run_cli(small_args(data_dir, out_a, cache, epochs=EPOCHS), tmp_path / "a.log"), tmp_path / "a.log")

    # B: the same command, SIGKILLed once the first epoch's checkpoint is on disk
    log_b = tmp_path / "b.log"
    proc = run_cli(small_args(data_dir, out_b, cache, epochs=EPOCHS), log_b)
    last = out_b / "checkpoints" / ckpt.LAST
    deadline = time.monotonic() + CHECKPOINT_WAIT_S
    try:
        while not last.exists():
            assert proc.poll() is None, f"the run ended before its first checkpoint:\n{log_b.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint within {CHECKPOINT_WAIT_S:.0f} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.load_last(out_b / "checkpoints")["state"]["epoch"]  # whole and loadable
    assert 1 <= killed_at < EPOCHS, "the run was not killed part-way"
    assert not (out_b / "model").exists()

    # --resume alone: arguments, RNG states, optimizer and scheduler come from the checkpoint
    resume_argv = ["--data-dir", str(data_dir), "--out", str(out_b), "--resume"]
    finish(run_cli(resume_argv, tmp_path / "resume.log"), tmp_path / "resume.log")
    assert f"resumed from epoch {killed_at}" in (tmp_path / "resume.log").read_text()

    metrics_a = json.loads((out_a / "model" / "metrics.json").read_text())
    metrics_b = json.loads((out_b / "model" / "metrics.json").read_text())
    assert metrics_b == metrics_a
    weights_a = load_file(str(out_a / "model" / "model.safetensors"))
    weights_b = load_file(str(out_b / "model" / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    history_b = json.loads((out_b / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history_b] == list(range(1, EPOCHS + 1))


# --- a full disk is reported at start, before anything is written -------------------------------------


def test_full_disk_is_reported_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = fake_dataset(tmp_path / "data")
    out = tmp_path / "runs" / "run1"
    asked = []

    def full_disk(path: str | Path) -> Usage:
        asked.append(Path(path))
        return Usage(10 * 2**30, 10 * 2**30, 0)

    monkeypatch.setattr(loop_mod.shutil, "disk_usage", full_disk)
    monkeypatch.setattr(train_mod, "load_images", lambda *a, **k: pytest.fail("the dataset was decoded"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert train_mod.main(small_args(data, out, tmp_path / "cache")) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"error: not enough disk space in {out}: 0 MiB free, about ")
    assert err.endswith(" needed")
    assert asked == [tmp_path]  # the nearest folder that exists: nothing was created to ask
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_full_disk_on_resume_leaves_the_run_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    ckpt.save_atomic({"state": {"epoch": 1}}, out / "checkpoints" / ckpt.LAST)
    before = (out / "checkpoints" / ckpt.LAST).read_bytes()
    monkeypatch.setattr(loop_mod.shutil, "disk_usage", lambda p: Usage(2**30, 2**30, 0))
    cfg = TrainConfig(data_dir=tmp_path, out=out, resume=True)
    with pytest.raises(loop_mod.RunError, match=f"not enough disk space in {out}"):
        loop_mod.prepare_out_dir(cfg, out / "model" / "config.json", loop_mod.disk_need(10**6))
    assert (out / "checkpoints" / ckpt.LAST).read_bytes() == before
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", ckpt.LAST]


# --- a checkpoint or model folder is never half-written ---------------------------------------------


class DiskFull(OSError):
    pass


def test_failed_model_folder_write_keeps_the_previous_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_model_folder(tmp_path / "model", seed=1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def fail_on_metrics(path: Path, data) -> None:
        if Path(path).name == "metrics.json":
            raise DiskFull(28, "No space left on device")
        real_write_json(path, data)

    real_write_json = folder_mod.write_json
    monkeypatch.setattr(folder_mod, "write_json", fail_on_metrics)
    with pytest.raises(DiskFull):
        folder_mod.write_model_folder(make_model(seed=2), folder, json_files={"metrics.json": {}})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left
    load_model(folder)
