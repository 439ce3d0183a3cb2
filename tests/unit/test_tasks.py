"""Task readers on the real GLUE files, Rotten Tomatoes from its PyPI wheel, the contamination check, metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.errors import EvalError
from experiments.scoring import accuracy, f1_positive, matthews, pearson, score, spearman
from experiments.tasks import (
    TASKS,
    dev_mask,
    load_task,
    normalised_words,
    overlap_with_corpus,
    read_glue,
    read_rotten_tomatoes,
    read_rotten_tomatoes_all,
    resolve_tasks,
)

REPO = Path(__file__).resolve().parents[2]
GLUE_DIR = REPO.parent / "shared" / "glue_data"

# (task, split) → rows, label counts by label string (SOURCES.md in the GLUE copy)
EXPECTED = {
    ("cola", "train"): (8551, {"1": 6023, "0": 2528}),
    ("cola", "dev"): (1043, {"1": 721, "0": 322}),
    ("sst2", "train"): (67349, {"1": 37569, "0": 29780}),
    ("sst2", "dev"): (872, {"1": 444, "0": 428}),
    ("mrpc", "train"): (3668, {"1": 2474, "0": 1194}),
    ("mrpc", "dev"): (408, {"1": 279, "0": 129}),
    ("stsb", "train"): (5749, {}),
    ("stsb", "dev"): (1500, {}),
    ("rte", "train"): (2490, {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "dev"): (277, {"entailment": 146, "not_entailment": 131}),
    ("wnli", "train"): (635, {"0": 323, "1": 312}),
    ("wnli", "dev"): (71, {"0": 40, "1": 31}),
}


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE copy beside the clone (`../shared/glue_data`); its absence is a failure, not a skip."""
    if not (GLUE_DIR / "CoLA" / "train.tsv").is_file():
        pytest.fail(f"{GLUE_DIR}: GLUE data not found; the tests need the shared/ folder beside the repository")
    return GLUE_DIR


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Download cache for Rotten Tomatoes, once per session (TACO_TEST_TASKS points to a kept one)."""
    return Path(os.environ.get("TACO_TEST_TASKS") or tmp_path_factory.mktemp("tasks"))


@pytest.mark.parametrize("task,split", list(EXPECTED))
def test_glue_reader_counts_and_labels(glue_dir: Path, task: str, split: str) -> None:
    data = read_glue(glue_dir, task, split)
    rows, labels = EXPECTED[(task, split)]
    assert len(data) == rows
    assert data.label_counts() == labels
    assert all(t and t == t.strip() for t in data.text_a)  # SST-2's trailing space is stripped
    assert (data.text_b is not None) == TASKS[task].is_pair
    if data.text_b is not None:
        assert len(data.text_b) == rows and all(data.text_b)


def test_glue_reader_quirks(glue_dir: Path) -> None:
    stsb = read_glue(glue_dir, "stsb", "train")
    assert stsb.labels.dtype == np.float32 and stsb.labels.min() == 0.0 and stsb.labels.max() == 5.0
    assert abs(float(stsb.labels.mean()) - 2.701) < 1e-3
    assert abs(float(read_glue(glue_dir, "stsb", "dev").labels.mean()) - 2.364) < 1e-3
    mrpc = read_glue(glue_dir, "mrpc", "train")  # BOM header; quotes inside fields kept verbatim
    assert mrpc.text_a[0].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert read_glue(glue_dir, "sst2", "train").text_a[0] == "hide new secretions from the parental units"
    cola = read_glue(glue_dir, "cola", "dev")  # no header, no final newline
    assert cola.text_a[0] == "The sailors rode the breeze clear of the rocks."
    assert load_task("SST-2", "dev", glue_dir=glue_dir).task == "sst2"


def _copy_task(glue_dir: Path, tmp_path: Path, folder: str) -> Path:
    root = tmp_path / "glue"
    shutil.copytree(glue_dir / folder, root / folder)
    for f in (root / folder).iterdir():
        f.chmod(0o644)
    return root


def test_malformed_tsv_is_one_line_error(glue_dir: Path, tmp_path: Path) -> None:
    root = _copy_task(glue_dir, tmp_path, "RTE")
    path = root / "RTE" / "dev.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[5] = lines[5].rsplit("\t", 1)[0]  # drop the label field of data row 5
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(EvalError) as err:
        read_glue(root, "rte", "dev")
    msg = str(err.value)
    assert "\n" not in msg and f"{path}:6:" in msg and "3 fields, expected 4" in msg

    path.write_text("a\tb\tc\tlabel\n0\tx\ty\tentailment\n", encoding="utf-8")
    with pytest.raises(EvalError, match="header"):
        read_glue(root, "rte", "dev")
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tx\ty\tmaybe\n", encoding="utf-8")
    with pytest.raises(EvalError, match="label 'maybe' is not one of entailment,not_entailment"):
        read_glue(root, "rte", "dev")


def test_missing_task_dir_and_bad_names(glue_dir: Path, tmp_path: Path) -> None:
    root = _copy_task(glue_dir, tmp_path, "RTE")
    with pytest.raises(EvalError) as err:
        read_glue(root, "cola", "train")
    assert str(err.value).startswith(f"{root / 'CoLA'}: missing task directory") and "\n" not in str(err.value)
    (root / "RTE" / "train.tsv").unlink()
    with pytest.raises(EvalError, match="train.tsv: missing file"):
        read_glue(root, "rte", "train")
    with pytest.raises(EvalError, match="--glue-dir is required"):
        read_glue(None, "rte", "dev")
    with pytest.raises(EvalError, match="no such directory"):
        read_glue(tmp_path / "nowhere", "rte", "dev")
    with pytest.raises(EvalError, match="unknown task; choose from"):
        resolve_tasks(["cola", "qqp"])
    assert resolve_tasks(["CoLA", "sts-b", "rt", "cola"]) == ["cola", "stsb", "rotten_tomatoes"]


def test_rotten_tomatoes_counts_and_split(task_cache: Path) -> None:
    texts, labels, wheel = read_rotten_tomatoes_all(task_cache)
    assert wheel.is_file() and len(texts) == 12808
    assert int((labels == 1).sum()) == 7403 and int((labels == 0).sum()) == 5405  # fresh, rotten
    train, dev = read_rotten_tomatoes(task_cache, "train"), read_rotten_tomatoes(task_cache, "dev")
    assert len(train) + len(dev) == 12808
    assert 0.08 < len(dev) / 12808 < 0.12
    assert train.label_counts()["fresh"] + dev.label_counts()["fresh"] == 7403
    assert not set(train.text_a) & set(dev.text_a)  # duplicated snippets stay on one side
    again = read_rotten_tomatoes(task_cache, "dev")
    assert again.text_a == dev.text_a and np.array_equal(again.labels, dev.labels)
    assert dev_mask(["a", "b"], seed=0).tolist() == dev_mask(["a", "b"], seed=0).tolist()


def test_overlap_rule_on_a_small_corpus() -> None:
    long_text = "the quick brown fox jumps over the lazy dog while the old cat sleeps by the warm fire"
    corpus = ["Once upon a time. The quick, brown fox jumps over the lazy dog while the old cat sleeps soundly.",
              "It was a dark and stormy night, said the narrator. Great!"]
    texts = [long_text, "It was a dark and stormy night, said the narrator.", "Great!", "nothing like this at all"]
    assert normalised_words("It's fine.") == normalised_words("it 's fine")
    assert overlap_with_corpus(texts, corpus) == 2  # a shared 13-gram; a whole 9-word sentence; "Great!" too short
    assert overlap_with_corpus(texts[2:], corpus) == 0


def test_rotten_tomatoes_not_in_builtin_corpus(task_cache: Path, builtin_corpus_dir: Path) -> None:
    from taco.corpus import read_prepared

    texts, _, _ = read_rotten_tomatoes_all(task_cache)
    train, validation = read_prepared(builtin_corpus_dir)
    assert overlap_with_corpus(texts, train + validation) == 0


def test_metrics_on_analytic_cases() -> None:
    gold = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 1])
    assert accuracy(pred, gold) == pytest.approx(400 / 6)
    assert f1_positive(pred, gold) == pytest.approx(200 * 2 / (4 + 1 + 1))
    assert matthews(pred, gold) == pytest.approx(100 * (2 * 2 - 1 * 1) / 9)
    assert matthews(np.ones(6), gold) == 0.0 and matthews(gold, gold) == pytest.approx(100)
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert pearson(2 * x + 1, x) == pytest.approx(100) and pearson(np.ones(4), x) == 0.0
    assert spearman(np.exp(x), x) == pytest.approx(100) and spearman(-x, x) == pytest.approx(-100)
    s = score(TASKS["mrpc"], pred, gold)
    assert s["score"] == pytest.approx((s["accuracy"] + s["f1"]) / 2)
    s = score(TASKS["stsb"], x ** 2, x)
    assert s["spearman"] == pytest.approx(100) and s["score"] == pytest.approx((s["pearson"] + 100) / 2)
