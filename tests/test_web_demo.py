"""The assembled app: its three API endpoints, the queue limits it runs with, and a page free of server paths."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio.state_holder import SessionState
from gradio_client import Client

from lungdemo.decode import DEFAULT_MAX_BYTES
from lungdemo.loading import SHIPPED_MODEL_DIR, ModelLoadError
from lungdemo.predictor import Predictor
from lungdemo.web import demo as web_demo
from lungdemo.web.about import about_markdown
from lungdemo.web.demo import (
    CLASSIFY_CONCURRENCY,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_QUEUE,
    EXAMPLES_DIR,
    example_files,
    launch_options,
    resolve_model_ref,
)
from tests.conftest import make_model_folder
from tests.web_helpers import EXAMPLES, FakeTimers, Server, components_by_elem_id, file_data, serve, upload

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(make_model_folder(tmp_path_factory.mktemp("demo") / "model", seed=3), timers=FakeTimers()) as s:
        yield s


def test_resolve_model_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_ref(" user/repo@v1 ") == "user/repo@v1"
    monkeypatch.setattr(web_demo, "SHIPPED_MODEL_DIR", tmp_path / "shipped_model")
    with pytest.raises(ModelLoadError, match="LUNGDEMO_MODEL") as info:
        resolve_model_ref(None)
    assert str(tmp_path / "shipped_model") in str(info.value)
    (tmp_path / "shipped_model").mkdir()
    assert resolve_model_ref("") == str(tmp_path / "shipped_model")


def test_example_files(tmp_path: Path) -> None:
    assert example_files(EXAMPLES_DIR) == EXAMPLES
    assert example_files(tmp_path / "absent") == [] and example_files(None) == []


def test_launch_options() -> None:
    assert launch_options() == {
        "max_file_size": DEFAULT_MAX_BYTES,
        "state_session_capacity": 256,
        "run_history": False,
        "enable_monitoring": False,
        "footer_links": ["api", "gradio"],
    }


def test_api_has_four_public_endpoints(server: Server) -> None:
    info = Client(server.url, verbose=False).view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    assert list(endpoints) == ["/classify", "/explain", "/classify_json", "/batch"]
    assert [p["parameter_name"] for p in endpoints["/classify"]["parameters"]] == ["image"]
    assert [p["parameter_name"] for p in endpoints["/classify_json"]["parameters"]] == ["image"]
    assert [r["component"] for r in endpoints["/classify_json"]["returns"]] == ["Json"]
    assert [p["parameter_name"] for p in endpoints["/explain"]["parameters"]] == ["image", "target_class"]
    assert [p["parameter_name"] for p in endpoints["/batch"]["parameters"]] == ["files"]
    assert [r["component"] for r in endpoints["/explain"]["returns"]] == ["Image", "Textbox"]
    assert [r["component"] for r in endpoints["/batch"]["returns"]] == ["Dataframe", "File"]


def test_concurrency_the_readme_states(server: Server) -> None:
    """16 classifications at once (they share forward passes), 2 heat maps (explain and the picker share
    the slots); batch and report 1 each."""
    assert CLASSIFY_CONCURRENCY == 16 and DEFAULT_CONCURRENCY == 2 and DEFAULT_MAX_QUEUE == 64
    queued = {(fn.api_name, fn.concurrency_id, fn.concurrency_limit) for fn in server.demo.fns.values() if fn.queue}
    named = {(name, cid, limit) for name, cid, limit in queued if name in ("classify", "explain", "batch")}
    assert named == {("classify", "classify", 16), ("explain", "explain", 2), ("batch", "batch", 1)}
    assert {cid for _, cid, _ in queued} == {"classify", "explain", "batch", "report"}
    assert {limit for _, cid, limit in queued if cid == "explain"} == {2}  # the picker too


def test_queue_runs_16_holds_64_and_then_says_queue_is_full(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """With all 16 classify slots busy, 64 more requests wait and the next is refused with "Queue is full"."""
    batched = server.state.classifier.batched
    real_predict = batched.predict_with_input
    release, started = threading.Event(), threading.Semaphore(0)
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def busy_predict(source: object) -> object:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        started.release()
        try:
            release.wait(WAIT_S)
            return real_predict(source)
        finally:
            with lock:
                running["now"] -= 1

    monkeypatch.setattr(batched, "predict_with_input", busy_predict)
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
        path = upload(http, EXAMPLES[0].read_bytes(), EXAMPLES[0].name).json()[0]
        body = {"data": [file_data(path)]}
        try:
            slots = CLASSIFY_CONCURRENCY
            events = [http.post("/gradio_api/call/classify", json=body).json()["event_id"] for _ in range(slots)]
            assert all(started.acquire(timeout=WAIT_S) for _ in range(slots))
            for _ in range(DEFAULT_MAX_QUEUE):
                response = http.post("/gradio_api/call/classify", json=body)
                assert response.status_code == 200, response.text
                events.append(response.json()["event_id"])
            full = http.post("/gradio_api/call/classify", json=body)
            assert running == {"now": slots, "most": slots}
        finally:
            release.set()
        assert full.status_code == 503
        assert full.json()["detail"] == "Queue is full. Max size is 64 and size is 64."
        for event_id in events:
            assert "event: complete" in http.get(f"/gradio_api/call/classify/{event_id}").text
    assert running["most"] == CLASSIFY_CONCURRENCY


def page_text(url: str) -> str:
    return httpx.get(f"{url.rstrip('/')}/config", timeout=30).text


def test_page_config_has_no_server_path(server: Server) -> None:
    """GET /config: the model shows by its folder's name; neither the checkout nor the folder's path appears."""
    text = page_text(server.url)
    assert str(REPO) not in text
    assert str(server.folder) not in text and str(server.folder.parent) not in text
    comps = components_by_elem_id(server.url)
    assert comps["model-card"]["props"]["value"] == about_markdown(server.state.loaded).strip()
    assert "Model: `model`" in text


def test_shipped_model_page_has_no_server_path() -> None:
    """The app as ``python app.py`` starts it: the shipped model, named, with no path of this checkout."""
    with serve(SHIPPED_MODEL_DIR, timers=FakeTimers()) as s:
        assert isinstance(s.state.predictor, Predictor) and s.state.loaded.folder == SHIPPED_MODEL_DIR
        text = page_text(s.url)
    assert str(REPO) not in text and str(SHIPPED_MODEL_DIR) not in text
    assert "Model: the shipped model (`shipped_model`)" in text


def test_a_new_session_does_not_search_for_absent_plot_packages(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every plain API call is a new Gradio session, whose page config asks ``gr.Plot`` for bokeh:
    when bokeh is not installed, Python is told once instead of searching ``sys.path`` per request."""
    if sys.modules.get("bokeh", None) is not None:
        pytest.skip("bokeh is installed here: there is no failing search to spare")
    assert any(isinstance(b, gr.Plot) for b in server.demo.blocks.values())
    searched: list[str] = []
    real = importlib.machinery.PathFinder.find_spec

    def spy(name: str, path: object = None, target: object = None) -> object:
        searched.append(name)
        return real(name, path, target)

    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", spy)
    SessionState(server.demo)
    assert "bokeh" not in searched
    monkeypatch.delitem(sys.modules, "bokeh")  # as Gradio runs without lean_serving
    SessionState(server.demo)
    assert "bokeh" in searched


def test_the_queue_summarises_its_events_rarely(server: Server) -> None:
    """Gradio's monitoring summary (a pandas table of recent events, unused here) is not rebuilt per request."""
    queue = server.demo._queue
    assert queue.ANALYTICS_MAX_EVENTS == 256
    assert queue.ANAYLTICS_CACHE_FREQUENCY == 256  # Gradio's spelling
