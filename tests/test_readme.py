"""The README's promises: its shape, its links, and the shipped model's figures.

Every figure the README, the docs and the shipped model card state for the shipped model is
compared with ``lungdemo/shipped_model/metrics.json``, rounded to the digits printed, so a
figure edited by hand (or left behind by a new model) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import metadata_load

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results.md"
SHIPPED = ROOT / "lungdemo" / "shipped_model"
MAX_README_LINES = 150
COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/python app.py",
    "bash .ci/run",
)
"""The two commands the README opens with: set up and start the demo, run the whole suite."""
NUMBER = r"(\d\.\d{3,})"
"""A printed figure: at least three decimals, so that rounding it away to nothing fails too."""


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return json.loads((SHIPPED / "metrics.json").read_text(encoding="utf-8"))


def flat(text: str) -> str:
    """Markdown with its line breaks and runs of spaces as single spaces (sentences wrap)."""
    return " ".join(text.split())


def assert_printed(printed: str, value: float, what: str) -> None:
    """``printed`` is ``value`` rounded to as many decimals as ``printed`` shows."""
    decimals = len(printed.split(".")[1])
    assert printed == f"{value:.{decimals}f}", f"{what}: printed {printed}, metrics.json has {value}"


def body_of(text: str) -> str:
    """The README without its Spaces front matter (between the first two ``---`` lines)."""
    assert text.startswith("---\n"), "README.md must start with the Spaces front matter"
    end = text.index("\n---\n", 4)
    return text[end + len("\n---\n") :]


# --- shape ---------------------------------------------------------------------------------


def test_readme_is_a_front_page_of_at_most_150_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move the manual to docs/"


def test_readme_starts_with_the_two_commands() -> None:
    """After the front matter and the title, the first thing is the two commands, each fenced."""
    body = body_of(README.read_text(encoding="utf-8")).lstrip("\n")
    title, _, rest = body.partition("\n")
    assert title.startswith("# "), f"expected the title after the front matter, got {title!r}"
    blocks = [f"```bash\n{command}\n```\n" for command in COMMANDS]
    assert rest.lstrip("\n").startswith(blocks[0] + "\n" + blocks[1]), (
        "README.md must open with the two commands in fenced bash blocks:\n" + "\n".join(COMMANDS)
    )
    for needed in ("requirements.txt", "app.py", ".ci/run"):  # what the commands run exists
        assert (ROOT / needed).is_file(), needed


# --- links ---------------------------------------------------------------------------------

CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Link and image targets outside code, without web addresses and in-page anchors."""
    text = CODE_SPAN.sub("", CODE_BLOCK.sub("", path.read_text(encoding="utf-8")))
    targets = LINK.findall(text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in HEADING.findall(text)}


def test_anchor_rule_matches_githubs() -> None:
    """The slug rule above, on a heading of this project's kind (GitHub's own anchor for it)."""
    page = "## The API: `/classify`, `/explain`, `/batch`\n"
    assert re.sub(r"[^\w\- ]", "", HEADING.findall(page)[0].lower()).replace(" ", "-") == (
        "the-api-classify-explain-batch"
    )


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve()
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_the_docs() -> None:
    """Every page of the manual is reachable from the front page."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs not linked from README.md: {missing}"


# --- the shipped model's figures -------------------------------------------------------------


def test_readme_figures_are_the_shipped_metrics(metrics: dict[str, Any]) -> None:
    text = flat(body_of(README.read_text(encoding="utf-8")))
    sentence = re.search(
        r"official test split \((\d+) slices\): accuracy " + NUMBER + r", macro-F1 " + NUMBER + r"; "
        r"on the leakage-free test subset \((\d+) slices\): macro-F1 " + NUMBER + r", "
        r"cancer-subtype macro-F1 " + NUMBER,
        text,
    )
    assert sentence, "README.md no longer states the shipped model's test figures in the expected sentence"
    n_test, accuracy, macro_f1, n_clean, clean_f1, clean_subtype_f1 = sentence.groups()
    test, clean = metrics["test"], metrics["test_leakage_free"]
    assert int(n_test) == test["n"] and int(n_clean) == clean["n"]
    assert_printed(accuracy, test["accuracy"], "test accuracy")
    assert_printed(macro_f1, test["macro"]["f1"], "test macro-F1")
    assert_printed(clean_f1, clean["macro"]["f1"], "leakage-free macro-F1")
    assert_printed(clean_subtype_f1, clean["cancer_subtype_macro_f1"], "leakage-free cancer-subtype macro-F1")


def test_results_row_of_the_shipped_model_is_its_metrics(metrics: dict[str, Any]) -> None:
    """docs/results.md's table row marked "(shipped)": validation and test figures."""
    rows = re.findall(r"^\| \*\*[^|*]+ \(shipped\)\*\* \|.*$", RESULTS.read_text(encoding="utf-8"), re.M)
    assert len(rows) == 1, f"expected one row marked (shipped) in docs/results.md, found {len(rows)}"
    cells = [c.strip().strip("*") for c in rows[0].strip("|").split("|")]
    val_f1, test_acc, test_f1, clean_f1, clean_subtype_f1 = cells[2:7]
    assert_printed(val_f1, metrics["validation"]["macro"]["f1"], "validation macro-F1")
    assert_printed(test_acc, metrics["test"]["accuracy"], "test accuracy")
    assert_printed(test_f1, metrics["test"]["macro"]["f1"], "test macro-F1")
    assert_printed(clean_f1, metrics["test_leakage_free"]["macro"]["f1"], "leakage-free macro-F1")
    assert_printed(clean_subtype_f1, metrics["test_leakage_free"]["cancer_subtype_macro_f1"], "subtype F1")


def test_results_calibration_of_the_shipped_model_is_its_metrics(metrics: dict[str, Any]) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    section = text.split("## Calibration (shipped model)", 1)[1].split("\n## ", 1)[0]
    found = re.search(
        r"T = " + NUMBER + r" .*?ECE on validation " + NUMBER + r" -> " + NUMBER + r"; "
        r"on the official test split " + NUMBER + r" -> " + NUMBER,
        flat(section),
    )
    assert found, "docs/results.md's calibration section no longer states T and the ECE figures"
    temperature, val_before, val_after, test_before, test_after = found.groups()
    val, test = metrics["validation"]["calibration"], metrics["test"]["calibration"]
    assert_printed(temperature, val["temperature"], "temperature")
    assert_printed(val_before, val["ece_uncalibrated"], "validation ECE before scaling")
    assert_printed(val_after, val["ece_calibrated"], "validation ECE after scaling")
    assert_printed(test_before, test["ece_uncalibrated"], "test ECE before scaling")
    assert_printed(test_after, test["ece_calibrated"], "test ECE after scaling")


CARD_METRICS = {
    ("accuracy", None): lambda split: split["accuracy"],
    ("f1", None): lambda split: split["macro"]["f1"],
    ("f1", "cancer-subtypes"): lambda split: split["cancer_subtype_macro_f1"],
}
"""The shipped card's model-index entries, by (metric type, config), and their metrics.json value."""


def test_card_model_index_is_the_shipped_metrics(metrics: dict[str, Any]) -> None:
    """The figures the Hub shows on the model page (the card's model-index) are metrics.json's."""
    results = metadata_load(SHIPPED / "README.md")["model-index"][0]["results"]
    checked = set()
    for result in results:
        split = result["dataset"]["split"]
        for metric in result["metrics"]:
            key = (metric["type"], metric.get("config"))
            expected = CARD_METRICS[key](metrics[split])
            assert_printed(repr(metric["value"]), expected, f"card {split} {metric['name']}")
            checked.add((split, key))
    assert checked == {(s, k) for s in ("test", "test_leakage_free") for k in CARD_METRICS}
