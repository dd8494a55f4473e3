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
from tests.conftest import make_model
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
