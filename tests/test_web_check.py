"""The out-of-distribution check as users meet it: the page's banner, the JSON endpoint, the batch CSV.

Served on the shipped model, which carries a fitted check (ood.json, ood.safetensors).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.ood import WARNING_START
from lungdemo.predict import CHECK_COLUMNS, predict_files, rows_to_csv
from lungdemo.predictor import Predictor
from lungdemo.web.classifier import notes_markdown
from tests.conftest import running_app
from train.ood_corpus import chessboard, png

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "adenocarcinoma_1.png"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ood") / "chessboard.png"
    path.write_bytes(png(chessboard()))
    return path


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with running_app(SHIPPED_MODEL_DIR) as (demo, _state):
        yield Client(demo.local_url, verbose=False)


def test_banner_leads_a_flagged_upload() -> None:
    md = notes_markdown([f"{WARNING_START}: far from every training slice (score 0.9)", "converted to grayscale"])
    assert md.startswith(f"### ⚠️ {WARNING_START}\n\nFar from every training slice (score 0.9).")
    assert "**The class probabilities are not meaningful.**" in md
    assert md.endswith("- converted to grayscale")
    assert notes_markdown(["converted to grayscale"]) == "**How the file was read:**\n\n- converted to grayscale"


def test_json_endpoint_flags_a_chessboard_and_passes_a_slice(client: Client, board: Path) -> None:
    flagged = client.predict(handle_file(str(board)), api_name="/classify_json")
    assert flagged["check"]["flagged"] is True
    assert flagged["check"]["score"] > flagged["check"]["threshold"] or flagged["check"]["reason"] != "far"
    assert flagged["warnings"][0].startswith(WARNING_START)
    assert set(flagged["probabilities"]) == set(Predictor.from_ref(SHIPPED_MODEL_DIR).class_names)

    ok = client.predict(handle_file(str(EXAMPLE)), api_name="/classify_json")
    assert ok["check"]["flagged"] is False and ok["top_class"] == max(ok["probabilities"], key=ok["probabilities"].get)
    assert not any(w.startswith(WARNING_START) for w in ok["warnings"])


def test_batch_csv_has_the_check_columns(board: Path) -> None:
    predictor = Predictor.from_ref(SHIPPED_MODEL_DIR)
    rows = predict_files(predictor, [(str(board), board), (str(EXAMPLE), EXAMPLE)])
    table = list(csv.DictReader(io.StringIO(rows_to_csv(rows, predictor.class_names))))
    assert set(CHECK_COLUMNS) <= set(table[0])
    assert [r["not_chest_ct"] for r in table] == ["True", "False"]
    assert float(table[0]["ood_score"]) > float(table[1]["ood_score"])
