"""train.pretrained: what --pretrained reads, and what it refuses to run.

The ImageNet loading paths (local file, torch cache, offline message) are tested with the
model in test_model.py; here: the safety of reading a local file and the error family.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lungdemo.errors import LungdemoError
from tests.conftest import make_model, make_model_folder
from train.pretrained import PretrainedError, apply_pretrained, read_state_dict


class Payload:
    """Unpickling this object would create ``marker``: the code a malicious .pth would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pth_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": Payload(marker)}, path)
    with pytest.raises(PretrainedError, match=re.escape(f"cannot read {path} as an AlexNet state dict")):
        apply_pretrained(make_model(hidden=0), str(path))
    assert not marker.exists()


def test_a_torch_file_that_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(PretrainedError, match=re.escape(f"{path} does not hold a state dict")):
        read_state_dict(path)


def test_a_safetensors_state_dict_is_read_as_is(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"features.0.weight": torch.arange(6.0).reshape(2, 3)}, str(path))
    assert torch.equal(read_state_dict(path)["features.0.weight"], torch.arange(6.0).reshape(2, 3))


def test_pretrained_errors_are_what_the_command_lines_catch() -> None:
    assert issubclass(PretrainedError, LungdemoError) and issubclass(PretrainedError, RuntimeError)


def test_a_trained_model_folder_is_a_warm_start_of_every_weight(tmp_path: Path) -> None:
    source = make_model_folder(tmp_path / "src", seed=3)
    (source / "training_args.json").write_text(
        '{"command": "python -m train --out runs/src", "pretrained": {"pretrained": "none"}}'
    )
    model = make_model(seed=4)
    record = apply_pretrained(model, str(source))
    want = make_model(seed=3).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())  # head included
    assert record["warm_start"] is True and record["source_command"] == "python -m train --out runs/src"


def test_a_warm_start_from_another_head_says_what_differs(tmp_path: Path) -> None:
    source = make_model_folder(tmp_path / "src", hidden=16)
    with pytest.raises(PretrainedError, match=r"hidden=16; this run has .* hidden=32"):
        apply_pretrained(make_model(), str(source))
    (source / "config.json").unlink()
    with pytest.raises(PretrainedError, match=re.escape(f"--pretrained {source}")):
        apply_pretrained(make_model(), str(source))
