"""The corpus of bad and unusual uploads (``tests/bad_input_corpus.py``) sent to a running app.

Every file is generated (from an example slice or pydicom's bundled test data) and sent over
Gradio's plain HTTP API, as any client on the internet could: upload, call, read the event
stream. A refused file must come back as an ``error`` event carrying the one-line reason
:mod:`lungdemo.preprocessing` words (never Gradio's generic message); an unusual but valid
file must be answered exactly as the evaluation path answers it, with its notes on the page.
After each one the app must still answer a good slice.

The last section treats model files as untrusted input too: tampered weights and configs
that the existing tests in ``test_model.py`` / ``test_hub.py`` do not cover.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
import torch
from safetensors.torch import load_file, save_file

from lungdemo.decode import DEFAULT_MAX_BYTES, WARNING_PREFIX
from lungdemo.loading import ModelLoadError, load_model
from lungdemo.predictor import Predictor
from tests.bad_input_corpus import ANSWERED, EXAMPLES, OVERSIZED_REFUSAL, REFUSED, oversized_file
from tests.conftest import make_model_folder
from tests.web_helpers import TOL, Reply, Server, classify_http, probabilities, serve

# --- the running app ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder_for_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("bad-inputs") / "model", seed=5)


@pytest.fixture(scope="module")
def server(model_folder_for_app: Path) -> Iterator[Server]:
    with serve(model_folder_for_app) as s:
        yield s


@pytest.fixture(scope="module")
def predictor(model_folder_for_app: Path) -> Predictor:
    return Predictor(load_model(model_folder_for_app))


def assert_answers_like_evaluation(reply: Reply, predictor: Predictor, data: bytes) -> None:
    assert reply.event == "complete", reply.payload
    got = probabilities(reply.payload[0])
    expected = predictor.predict(data).probabilities
    assert set(got) == set(expected)
    for name, p in expected.items():
        assert got[name] == pytest.approx(p, abs=TOL), name


def assert_still_serving(server: Server, predictor: Predictor) -> None:
    good = EXAMPLES[-1].read_bytes()
    assert_answers_like_evaluation(classify_http(server.url, good, EXAMPLES[-1].name), predictor, good)


# --- refused, answered, and the app keeps serving --------------------------------------------------


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_with_its_reason(server: Server, predictor: Predictor, kind: str) -> None:
    case = REFUSED[kind]
    reply = classify_http(server.url, case.make(), case.file_name)
    assert reply.event == "error", reply.payload
    message = reply.payload["error"]
    assert message.startswith(case.expected), message
    assert "\n" not in message  # a one-line reason
    assert "verbose error reporting" not in message
    assert reply.payload.get("title") == "Cannot read this file"
    assert_still_serving(server, predictor)


TEXT_LIKE = {"text_renamed_png": b"patient notes", "html": b"onerror", "svg": b"<circle"}
"""Refused files whose content is readable text, and a piece of it that must not reach the log."""


@pytest.mark.parametrize("kind", list(REFUSED))
def test_server_log_holds_size_and_reason_not_content(
    server: Server, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = REFUSED[kind]
    data = case.make()
    caplog.set_level(logging.INFO, logger="lungdemo")
    reply = classify_http(server.url, data, case.file_name)
    assert reply.event == "error"
    [record] = [r for r in caplog.records if r.name == "lungdemo.web.classifier"]
    assert record.getMessage() == f"rejected upload ({len(data)} bytes): {reply.payload['error']}"
    assert record.levelno == logging.INFO and record.exc_info is None
    if kind in TEXT_LIKE:
        assert TEXT_LIKE[kind] in data and TEXT_LIKE[kind].decode() not in caplog.text


@pytest.mark.parametrize("kind", list(ANSWERED))
def test_answered_like_evaluation_with_notes(server: Server, predictor: Predictor, kind: str) -> None:
    case = ANSWERED[kind]
    data = case.make()
    assert_answers_like_evaluation(classify_http(server.url, data, case.file_name), predictor, data)
    # what the page shows under the probabilities (the page-only notes event)
    page_notes = server.state.classifier.notes(data)
    assert f"- {case.expected}" in page_notes
    assert_still_serving(server, predictor)


def test_colour_photo_warning_is_shown_first(server: Server, predictor: Predictor) -> None:
    """A colour photograph still gets an answer; the warning heads the page's notes."""
    data = ANSWERED["colour_photo"].make()
    prediction = predictor.predict(data)
    assert len(prediction.warnings) == 1 and prediction.notes[0] == prediction.warnings[0]
    page_notes = server.state.classifier.notes(data)
    first_note = page_notes.split("\n- ", 1)[1]
    assert first_note.startswith(f"{WARNING_PREFIX}this does not look like a CT slice")


def test_good_slices_get_no_warning(server: Server) -> None:
    for example in EXAMPLES:
        assert WARNING_PREFIX not in server.state.classifier.notes(example.read_bytes())


def test_oversized_file_is_refused_at_upload(server: Server, predictor: Predictor) -> None:
    big = oversized_file()
    assert len(big) == DEFAULT_MAX_BYTES + 1
    reply = classify_http(server.url, big, "big.png")
    assert reply.event == "upload refused"
    status, text = reply.payload
    assert status == 413
    assert OVERSIZED_REFUSAL in text
    # and were the upload limit off, the classify function refuses it before decoding
    with pytest.raises(gr.Error) as err:
        server.state.classifier.classify(big)
    assert err.value.message == "the file is 20,971,521 bytes (20.0 MiB); the limit is 20,971,520 bytes (20 MiB)"
    assert_still_serving(server, predictor)


def test_concurrent_mix_of_good_and_bad(server: Server, predictor: Predictor) -> None:
    """4 clients, 24 requests, good and bad interleaved: each gets its answer or its reason."""
    good = EXAMPLES[1].read_bytes()
    mix = [("good", good, EXAMPLES[1].name)] + [(k, c.make(), c.file_name) for k, c in REFUSED.items()]
    jobs = [mix[i % len(mix)] for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda job: (job[0], classify_http(server.url, job[1], job[2])), jobs))
    for kind, reply in replies:
        if kind == "good":
            assert_answers_like_evaluation(reply, predictor, good)
        else:
            assert reply.event == "error" and reply.payload["error"].startswith(REFUSED[kind].expected), kind
    assert_still_serving(server, predictor)


# --- model files are untrusted input too ------------------------------------------------------------


class _Bomb:
    """Unpickling this creates a file: proof that a loader did (or did not) unpickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def _rewrite_header(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the JSON header of a safetensors file in place, keeping the tensor bytes."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])


def _first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return header[next(k for k in sorted(header) if k != "__metadata__")]


def _pickle_named_safetensors(folder: Path) -> None:
    torch.save({"features.0.weight": _Bomb(str(folder.parent / "unpickled"))}, folder / "model.safetensors")


def _absurd_header_length(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + path.read_bytes()[8:])


def _offsets_past_the_end(folder: Path) -> None:
    _rewrite_header(folder / "model.safetensors", lambda h: _first_tensor(h).update(data_offsets=[0, 10**12]))


def _dtype_changed(folder: Path) -> None:
    _rewrite_header(folder / "model.safetensors", lambda h: _first_tensor(h).update(dtype="F64"))


def _integer_weights(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v.round().to(torch.int64) for k, v in state.items()}, str(folder / "model.safetensors"))


def _config_not_json(folder: Path) -> None:
    (folder / "config.json").write_text("{'class_names': ['a', 'b']}")


def _config_not_an_object(folder: Path) -> None:
    (folder / "config.json").write_text('["adenocarcinoma", "normal"]')


def _config_bad_preprocessing(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["preprocessing"]["image_size"] = 10**9  # would allocate a 10^18-pixel input
    (folder / "config.json").write_text(json.dumps(config))


TAMPERED = {
    "pickle_named_model_safetensors": (_pickle_named_safetensors, "is not a valid safetensors file"),
    "absurd_header_length": (_absurd_header_length, "is not a valid safetensors file"),
    "tensor_offsets_past_the_end": (_offsets_past_the_end, "is not a valid safetensors file"),
    "tensor_dtype_changed_in_header": (_dtype_changed, "is not a valid safetensors file"),
    "integer_weights": (_integer_weights, "holds non-float weights"),
    "config_not_json": (_config_not_json, "config.json is not valid JSON"),
    "config_not_an_object": (_config_not_an_object, "config.json must hold a JSON object"),
    "config_absurd_image_size": (_config_bad_preprocessing, "image_size must be an integer in 32..1024"),
}


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_tampered_model_folder_is_a_clear_error(model_folder: Path, kind: str) -> None:
    tamper, expected = TAMPERED[kind]
    folder = model_folder.parent / "tampered"
    shutil.copytree(model_folder, folder)
    tamper(folder)
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    assert expected in str(err.value)
    assert str(folder) in str(err.value)
    assert not (folder.parent / "unpickled").exists()
    if kind == "pickle_named_model_safetensors":  # the file really is torch's zipped pickle
        data = (folder / "model.safetensors").read_bytes()
        assert data[:4] == b"PK\x03\x04"
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(data), weights_only=True)
