"""train.checkpoint: last.pt and best.safetensors are whole files whatever happens while writing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lungdemo.atomic as atomic_mod
import train.checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]


class DiskFull(OSError):
    pass


def test_checkpoint_round_trip_holds_tensors_rng_states_and_containers(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    obj = {"state": {"epoch": 2, "history": [{"epoch": 1, "val_macro_f1": 0.5}]}, "w": torch.arange(4.0)}
    obj["gen_state"] = gen.get_state()
    ckpt.save_atomic(obj, tmp_path / ckpt.LAST)
    back = ckpt.load_last(tmp_path)
    assert back["state"] == obj["state"] and torch.equal(back["w"], obj["w"])
    restored = torch.Generator()
    restored.set_state(back["gen_state"])
    assert torch.equal(torch.rand(5, generator=restored), torch.rand(5, generator=gen))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LAST]


def test_checkpoint_write_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real_fsync = atomic_mod.os.fsync
    monkeypatch.setattr(atomic_mod.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    ckpt.save_atomic({"state": {"epoch": 1}}, tmp_path / ckpt.LAST)
    assert len(synced) == 1


def test_load_last_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume from: {tmp_path / ckpt.LAST}"):
        ckpt.load_last(tmp_path)


def test_checkpoint_refuses_to_unpickle_code(tmp_path: Path) -> None:
    """``weights_only``: a last.pt holding an arbitrary object is refused, not run."""
    torch.save({"state": DiskFull(28, "not a tensor")}, tmp_path / ckpt.LAST)
    with pytest.raises(Exception, match="Weights only load failed"):
        ckpt.load_last(tmp_path)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ckpt.LAST
    first = {"state": {"epoch": 1}, "weights": torch.arange(10.0)}
    ckpt.save_atomic(first, path)
    before = path.read_bytes()
    real_save = torch.save

    def write_half_then_fail(obj, f, *args, **kwargs) -> None:
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half a checkpoint on disk, as a kill mid-write leaves it
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", write_half_then_fail)
    with pytest.raises(DiskFull):
        ckpt.save_atomic({"state": {"epoch": 2}, "weights": torch.zeros(10)}, path)
    assert path.read_bytes() == before
    loaded = torch.load(path, weights_only=True)
    assert loaded["state"]["epoch"] == 1 and torch.equal(loaded["weights"], first["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LAST]  # no partial file left


def test_killed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    """SIGKILL during ``torch.save``: at most a partial temporary file beside the intact checkpoint."""
    path = tmp_path / ckpt.LAST
    ckpt.save_atomic({"state": {"epoch": 1}}, path)
    script = (
        "import os, signal, sys, torch\n"
        "import train.checkpoint as ckpt\n"
        "real = torch.save\n"
        "def die(obj, f, *a, **k):\n"
        "    real(obj, f, *a, **k)\n"
        "    f.flush(); f.truncate(f.tell() // 2); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "ckpt.torch.save = die\n"
        "ckpt.save_atomic({'state': {'epoch': 2}, 'w': torch.zeros(1000)}, sys.argv[1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(path, weights_only=True)["state"]["epoch"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != ckpt.LAST]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{ckpt.LAST}.") and leftovers[0].endswith(".tmp")
    ckpt.save_atomic({"state": {"epoch": 2}}, path)  # the next run's save is not disturbed by it
    assert torch.load(path, weights_only=True)["state"]["epoch"] == 2


def test_best_weights_round_trip_as_contiguous_cpu_tensors(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3).t(), "n": torch.tensor(7)}  # a transposed, non-contiguous view
    ckpt.save_best(state, tmp_path)
    back = ckpt.load_best(tmp_path)
    assert torch.equal(back["w"], state["w"]) and back["w"].is_contiguous()
    assert torch.equal(back["n"], state["n"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.BEST]


def test_failed_best_weights_write_keeps_the_previous_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt.save_best({"w": torch.ones(3)}, tmp_path)

    def fail(tensors, filename, *args, **kwargs) -> None:
        Path(filename).write_bytes(b"\0" * 7)
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", fail)
    with pytest.raises(DiskFull):
        ckpt.save_best({"w": torch.zeros(3)}, tmp_path)
    assert torch.equal(ckpt.load_best(tmp_path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.BEST]
