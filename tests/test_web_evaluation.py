"""The evaluation tab: tables and figures from metrics.json, the figures drawn once and reused."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungdemo import plots
from lungdemo.web.demo import build_demo
from lungdemo.web.evaluation import (
    PlotCache,
    calibration_intro,
    calibration_rows,
    draw_confusion,
    draw_reliability,
    report_rows,
    summary_rows,
)
from tests.conftest import TEST_CLASSES, fake_metrics, make_model_folder
from tests.web_helpers import Server, components_by_elem_id, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(make_model_folder(tmp_path_factory.mktemp("evaluation") / "model", seed=3)) as s:
        yield s


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Wrap ``lungdemo.plots.<name>``; the list gets one title per figure drawn."""
    calls: list[str] = []
    real = getattr(plots, name)

    def counted(*args: object) -> object:
        calls.append(str(args[-1]))
        return real(*args)

    monkeypatch.setattr(plots, name, counted)
    return calls


def png_of(image: object) -> Image.Image:
    header, _, encoded = image.plot.partition(",")
    assert (image.type, header) == ("matplotlib", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_tables_come_from_the_metrics_dict() -> None:
    metrics = fake_metrics(seed=4)
    rows = report_rows(metrics["test"])
    assert [r[0] for r in rows] == [*metrics["class_names"], "macro avg", "weighted avg"]
    c = metrics["test"]["per_class"]["normal"]
    assert rows[2] == ["normal", round(c["precision"], 3), round(c["recall"], 3), round(c["f1"], 3), c["support"]]

    del metrics["test_leakage_free"]
    summary = {r[0]: r[1:] for r in summary_rows(metrics)}
    assert summary["accuracy"] == [round(metrics["test"]["accuracy"], 3), "—"]
    assert summary["slices (n)"] == [metrics["test"]["n"], "—"]


def test_the_app_draws_trainings_confusion_matrix() -> None:
    """One drawing: lungdemo.plots' figure, with the split's size in the title."""
    split = fake_metrics(seed=1)["test"]
    ax = draw_confusion(split, "Official test split").axes[0]
    assert [int(t.get_text()) for t in ax.texts] == [v for row in split["confusion_matrix"] for v in row]
    assert ax.get_title() == f"Official test split (n={split['n']})"
    assert [t.get_text() for t in ax.get_xticklabels()] == [c.replace("_", " ") for c in TEST_CLASSES]


def test_calibration_rows_and_missing_splits() -> None:
    metrics = fake_metrics(seed=2)
    rows = calibration_rows(metrics)
    cal = metrics["validation"]["calibration"]
    assert rows[0] == [
        "Validation split",
        metrics["validation"]["n"],
        round(cal["temperature"], 3),
        round(cal["ece_uncalibrated"], 3),
        round(cal["ece_calibrated"], 3),
    ]
    assert "no calibration results" not in calibration_intro(metrics, 1.5)
    metrics["validation"] = {k: v for k, v in metrics["validation"].items() if k != "calibration"}
    assert [r[0] for r in calibration_rows(metrics)] == ["Official test split"]
    assert "no calibration results for `validation`" in calibration_intro(metrics, 1.5)
    assert calibration_rows({"class_names": TEST_CLASSES}) == []


def test_reliability_plots_drawn_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_calls(monkeypatch, "reliability_figure")
    cal = fake_metrics(seed=3)["test"]["calibration"]
    cache = PlotCache("reliability diagrams", draw_reliability, [(cal, "Official test split")])
    assert calls == []  # nothing drawn before the first visit
    images = cache.render()
    assert len(images) == 1 and calls == ["Official test split"]
    png = png_of(images[0])
    assert png.width > 200 and np.asarray(png).std() > 0
    again = cache.render()
    assert calls == ["Official test split"]  # not drawn again
    assert again[0] is images[0]


def test_evaluation_tab_reads_metrics_json(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = json.loads((server.folder / "metrics.json").read_text())
    comps = components_by_elem_id(server.url)

    summary = comps["metrics-summary"]["props"]["value"]
    rows = {row[0]: row[1:] for row in summary["data"]}
    for col, key in enumerate(["test", "test_leakage_free"]):
        m = metrics[key]
        assert rows["slices (n)"][col] == m["n"]
        assert rows["accuracy"][col] == round(m["accuracy"], 3)
        assert rows["macro F1"][col] == round(m["macro"]["f1"], 3)
        assert rows["weighted F1"][col] == round(m["weighted"]["f1"], 3)
        assert rows["cancer-subtype macro F1"][col] == round(m["cancer_subtype_macro_f1"], 3)
    assert rows["slices (n)"][0] != rows["slices (n)"][1]  # the two splits really differ

    for key in ("test", "test_leakage_free"):
        m = metrics[key]
        report = {row[0]: row[1:] for row in comps[f"report-{key}"]["props"]["value"]["data"]}
        for name in m["class_names"]:
            c = m["per_class"][name]
            assert report[name] == [round(c["precision"], 3), round(c["recall"], 3), round(c["f1"], 3), c["support"]]
        assert report["macro avg"][:3] == [round(m["macro"][k], 3) for k in ("precision", "recall", "f1")]
        assert report["weighted avg"][:3] == [round(m["weighted"][k], 3) for k in ("precision", "recall", "f1")]
        assert comps[f"confusion-{key}"]["type"] == "plot"

    # the confusion matrices are drawn from the same dicts when the tab is first opened, once
    calls = count_calls(monkeypatch, "confusion_matrix_figure")
    cache = server.state.confusion_plots
    assert [split for split, _ in cache.splits] == [metrics["test"], metrics["test_leakage_free"]]
    images = cache.render()
    assert calls == [
        f"Official test split (n={metrics['test']['n']})",
        f"Leakage-free test subset (n={metrics['test_leakage_free']['n']})",
    ]
    for image in images:
        assert png_of(image).width > 200
    again = cache.render()
    assert len(calls) == 2 and all(a is b for a, b in zip(again, images, strict=True))  # drawn once, reused


def test_evaluation_tab_shows_calibration(server: Server) -> None:
    metrics = json.loads((server.folder / "metrics.json").read_text())
    comps = components_by_elem_id(server.url)
    table = comps["calibration-table"]["props"]["value"]["data"]
    assert [row[0] for row in table] == ["Validation split", "Official test split"]
    for row, key in zip(table, ["validation", "test"], strict=True):
        cal = metrics[key]["calibration"]
        assert row[1:] == [
            metrics[key]["n"],
            round(cal["temperature"], 3),
            round(cal["ece_uncalibrated"], 3),
            round(cal["ece_calibrated"], 3),
        ]
    assert "no calibration results" not in comps["calibration-intro"]["props"]["value"]
    diagrams = server.state.reliability_plots
    assert [split for split, _ in diagrams.splits] == [
        metrics["validation"]["calibration"],
        metrics["test"]["calibration"],
    ]
    for image in diagrams.render():
        assert png_of(image).width > 200
    assert comps["reliability-test"]["type"] == "plot"


def test_metrics_without_calibration_say_so(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    metrics = json.loads((folder / "metrics.json").read_text())
    for split in metrics.values():
        if isinstance(split, dict):
            split.pop("calibration", None)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    demo, state = build_demo(str(folder), warmup=False)
    texts = [getattr(b, "value", "") for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-calibration"]
    assert texts and "no calibration results" in texts[0]
    assert state.reliability_plots is None

    # one split without it: the table shows the other, the text names the missing one
    metrics = json.loads((make_model_folder(tmp_path / "model2") / "metrics.json").read_text())
    del metrics["validation"]["calibration"]
    (tmp_path / "model2" / "metrics.json").write_text(json.dumps(metrics))
    demo, state = build_demo(str(tmp_path / "model2"), warmup=False)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert [row[0] for row in blocks["calibration-table"].value["data"]] == ["Official test split"]
    assert "no calibration results for `validation`" in blocks["calibration-intro"].value
    assert len(state.reliability_plots.render()) == 1


def test_folder_without_metrics_says_so(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    (folder / "metrics.json").unlink()
    demo, state = build_demo(str(folder), warmup=False)
    texts = [getattr(b, "value", "") for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-metrics"]
    assert texts and "has no `metrics.json`" in texts[0]
    assert "`model`" in texts[0] and str(folder) not in texts[0]  # the folder's name, not its path
    assert not [
        b for b in demo.blocks.values() if getattr(b, "elem_id", "") and str(b.elem_id).startswith("confusion-")
    ]
    assert state.confusion_plots is None and state.reliability_plots is None


def test_evaluation_tab_shows_the_intervals(server: Server) -> None:
    metrics = json.loads((server.folder / "metrics.json").read_text())
    comps = components_by_elem_id(server.url)
    rows = {row[0]: row[1:] for row in comps["intervals"]["props"]["value"]["data"]}
    for col, key in enumerate(["test", "test_leakage_free"]):
        ci = metrics[key]["intervals"]
        mf1 = ci["macro_f1"]
        assert rows["macro F1"][col] == f"{mf1['estimate']:.3f} ({mf1['low']:.3f} to {mf1['high']:.3f})"
        assert mf1["estimate"] == pytest.approx(metrics[key]["macro"]["f1"])
        for name in TEST_CLASSES:
            r = ci["recall"][name]
            assert rows[f"recall: {name}"][col] == f"{r['estimate']:.3f} ({r['low']:.3f} to {r['high']:.3f})"
    assert "500 resamples" in comps["intervals-intro"]["props"]["value"]
    # no robustness or upload-check measurement in this folder: the tab says how to make one
    assert "--write-metrics" in comps["no-robustness"]["props"]["value"]
    assert "no measurement of the upload check" in comps["no-ood-metrics"]["props"]["value"]
