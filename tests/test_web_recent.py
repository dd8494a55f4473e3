"""lungdemo.web.recent and its use: the page's follow-ups reuse what /classify read and decoded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lungdemo import batching, gradcam
from lungdemo.gradcam import explain_source
from lungdemo.loading import load_model
from lungdemo.predictor import Predictor
from lungdemo.web import classifier as classifier_mod
from lungdemo.web.classifier import TOP_CLASS_CHOICE, Classifier, notes_markdown
from lungdemo.web.recent import Decoded, RecentUploads
from tests.web_helpers import EXAMPLES, write_unusual


def decoded(nbytes: int, side: int = 4) -> Decoded:
    return Decoded(b"x" * nbytes, torch.zeros(1, side, side, dtype=torch.uint8), ("a note",))


def files(tmp_path: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"%d" % i)
        paths.append(str(path))
    return paths


def test_recent_keeps_the_last_entries_least_recently_used_out(tmp_path: Path) -> None:
    recent = RecentUploads(max_entries=2, max_bytes=10_000)
    a, b, c = files(tmp_path, 3)
    recent.put(a, decoded(10))
    recent.put(b, decoded(20))
    assert recent.get(a) is not None  # a is now the most recent
    recent.put(c, decoded(30))
    assert recent.get(b) is None and recent.get(a) is not None and recent.get(c) is not None
    assert len(recent) == 2 and recent.nbytes == (10 + 16) + (30 + 16)


def test_recent_is_bounded_in_bytes(tmp_path: Path) -> None:
    recent = RecentUploads(max_entries=10, max_bytes=100)
    a, b, c = files(tmp_path, 3)
    recent.put(a, decoded(40))
    recent.put(b, decoded(40))
    assert recent.get(a) is None and recent.get(b) is not None  # 2 x 56 > 100
    recent.put(c, decoded(200))  # larger than the whole budget: not kept, nothing dropped for it
    assert recent.get(c) is None and recent.get(b) is not None
    recent.put(b, decoded(10))  # replacing an entry counts its bytes once
    assert len(recent) == 1 and recent.nbytes == 26


def test_recent_forgets_a_file_that_changed_or_went(tmp_path: Path) -> None:
    recent = RecentUploads()
    a, b = files(tmp_path, 2)
    recent.put(a, decoded(1))
    recent.put(b, decoded(1))
    Path(a).write_bytes(b"other content")
    Path(b).unlink()
    assert recent.get(a) is None and recent.get(b) is None
    assert len(recent) == 0 and recent.nbytes == 0
    recent.put(b, decoded(1))  # a path that is not there is not kept
    assert len(recent) == 0


class Counting:
    """Wraps a function and counts its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counting]:
    """Every read of an upload and every decode on the classifier's paths, counted."""
    found = {
        "read": Counting(classifier_mod.read_upload),
        "decode_for_classify": Counting(batching.decode_canonical),
        "decode_for_explain": Counting(gradcam.decode_canonical),
        "decode_for_notes": Counting(classifier_mod.decode_image),
    }
    monkeypatch.setattr(classifier_mod, "read_upload", found["read"])
    monkeypatch.setattr(batching, "decode_canonical", found["decode_for_classify"])
    monkeypatch.setattr(gradcam, "decode_canonical", found["decode_for_explain"])
    monkeypatch.setattr(classifier_mod, "decode_image", found["decode_for_notes"])
    return found


def calls(counted: dict[str, Counting]) -> dict[str, int]:
    return {name: c.calls for name, c in counted.items()}


def test_follow_ups_neither_read_nor_decode_the_upload_again(
    model_folder: Path, tmp_path: Path, counted: dict[str, Counting]
) -> None:
    predictor = Predictor(load_model(model_folder))
    classifier = Classifier(predictor)
    path = write_unusual("animated", tmp_path)  # a file with decode notes
    upload = {"path": str(path), "orig_name": "slice.png"}
    data = path.read_bytes()
    want = predictor.predict(data)
    assert want.notes

    label = classifier.classify(upload)
    overlay, target = classifier.explain(upload, TOP_CLASS_CHOICE)
    notes = classifier.notes(upload)
    current = classifier.remember(upload)
    assert calls(counted) == {"read": 1, "decode_for_classify": 1, "decode_for_explain": 0, "decode_for_notes": 0}

    assert label == pytest.approx(want.probabilities, abs=1e-6)
    fresh = explain_source(predictor, data)
    assert target == fresh.target_class
    assert np.array_equal(np.asarray(overlay), np.asarray(fresh.overlay()))
    assert notes == notes_markdown(want.notes)
    assert current is not None and current.data == data and current.name == "slice.png"
    classifier.batched.close()


def test_follow_ups_read_again_what_they_did_not_see_classified(
    model_folder: Path, tmp_path: Path, counted: dict[str, Counting]
) -> None:
    """/explain called alone, or a file changed since, is read and decoded as before."""
    classifier = Classifier(Predictor(load_model(model_folder)))
    path = tmp_path / "slice.png"
    shutil.copy(EXAMPLES[0], path)
    classifier.classify(str(path))
    shutil.copy(EXAMPLES[1], path)  # another slice at the same path
    classifier.explain(str(path), TOP_CLASS_CHOICE)
    assert classifier.remember(str(path)).data == EXAMPLES[1].read_bytes()
    assert calls(counted) == {"read": 3, "decode_for_classify": 1, "decode_for_explain": 1, "decode_for_notes": 0}
    classifier.explain(EXAMPLES[2].read_bytes(), TOP_CLASS_CHOICE)  # bytes from Python: never kept
    assert counted["decode_for_explain"].calls == 2
    classifier.batched.close()
