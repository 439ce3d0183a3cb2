"""Task readers on GLUE-layout files the tests write (`tests/glue_fixture.py`) and, with `$GLUE_DIR`, on the real
GLUE files (row counts, labels and checksums from the copy's SOURCES.md); Rotten Tomatoes from its PyPI wheel; the
contamination check; metrics."""

from __future__ import annotations

import csv
import hashlib
import io
import os
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
from tests import glue_fixture
from tests.glue_fixture import FOLDERS, HEADERS, needs_real_glue, real_glue, real_glue_dir, write_glue

# The real GLUE copy (SOURCES.md): (task, split) → rows, label counts by label string
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
# Every TSV of the copy (SOURCES.md): path, data rows (csv, QUOTE_NONE, header excluded), bytes, sha256
REAL_FILES = [
    ("CoLA/train.tsv", 8551, 428590, "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624"),
    ("CoLA/dev.tsv", 1043, 53717, "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd"),
    ("CoLA/test.tsv", 1063, 48788, "3b4df85f7a9a0633574b38d181e18090ac961a24b18fb6bcd74999ddea8ad0b8"),
    ("SST-2/train.tsv", 67349, 3806081, "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
    ("SST-2/dev.tsv", 872, 94931, "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
    ("SST-2/test.tsv", 1821, 197335, "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13"),
    ("MRPC/train.tsv", 3668, 919457, "122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d"),
    ("MRPC/dev.tsv", 408, 103255, "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7"),
    ("MRPC/test.tsv", 1725, 435216, "4ee428d354c01fa35c2f0f6ab835398abb0bec01f17ed68fbcb6c04265505b0a"),
    ("MRPC/dev_ids.tsv", 408, 6222, "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7"),
    ("STS-B/train.tsv", 5749, 984099, "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2"),
    ("STS-B/dev.tsv", 1500, 276928, "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"),
    ("STS-B/test.tsv", 1379, 292587, "16b4223d7d44a644fbc10f1b449472cfe81e1715fb07cf44023b0aa88ce856eb"),
    ("RTE/train.tsv", 2490, 846226, "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c"),
    ("RTE/dev.tsv", 277, 90343, "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"),
    ("RTE/test.tsv", 3000, 933969, "6e33f09b5c2bfd5fd5fde217070f3dd49e484e33b9752b5864cf36fc421a213f"),
    ("WNLI/train.tsv", 635, 99411, "9a88e9d54b6861cc796a088e9acf4f5f65064a9ef65ae6fa7a688b28391e5c9a"),
    ("WNLI/dev.tsv", 71, 11261, "cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5"),
    ("WNLI/test.tsv", 146, 35761, "ff0296817e235bf6f7a230c5f6781bd6ee228a45445f6510831fdef6f2a04766"),
]
NO_HEADER = {"CoLA/train.tsv", "CoLA/dev.tsv", "MRPC/dev_ids.tsv"}


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Download cache for Rotten Tomatoes, once per session (TACO_TEST_TASKS points to a kept one)."""
    return Path(os.environ.get("TACO_TEST_TASKS") or tmp_path_factory.mktemp("tasks"))


# ------------------------------------------------------------------------------- GLUE-layout fixture files

FIXTURE_SPLITS = [(t, s) for t in glue_fixture.FIXTURE_TASKS for s in glue_fixture.SPLITS]


@pytest.mark.parametrize("task,split", FIXTURE_SPLITS)
def test_glue_reader_reads_every_fixture_row(glue_fixture_dir: Path, task: str, split: str) -> None:
    data = read_glue(glue_fixture_dir, task, split)
    want = glue_fixture.expected(task, split)
    assert data.task == task and data.split == split
    assert data.source == str(glue_fixture_dir / FOLDERS[task] / f"{split}.tsv")
    assert data.text_a == want.text_a  # every row, in file order, stripped, quotes kept verbatim
    assert data.text_b == want.text_b
    if task == "stsb":
        assert data.labels.dtype == np.float32
        assert data.labels.tolist() == pytest.approx([float(x) for x in want.labels])
    else:
        assert data.labels.dtype == np.int64
        assert [TASKS[task].labels[i] for i in data.labels] == want.labels
        assert sum(data.label_counts().values()) == len(want.labels)


def test_glue_reader_quirks_on_fixture(glue_fixture_dir: Path) -> None:
    root = glue_fixture_dir
    # MRPC: a BOM before the header; quotes inside fields kept verbatim; an opening quote that is never closed
    assert (root / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    mrpc = read_glue(root, "mrpc", "train")
    assert mrpc.text_a[0] == ('The mayor called the new budget "a plan for the next decade", and the council '
                              "approved it on Tuesday.")
    assert mrpc.labels[:2].tolist() == [1, 0]
    dev = read_glue(root, "mrpc", "dev")
    assert dev.text_b[0] == '"The new line will cut the trip downtown by half for most of our riders.'
    assert len(dev) == 6 and dev.text_a[1] == "The central bank left interest rates unchanged at 2.5 percent."
    with (root / "MRPC" / "dev.tsv").open(encoding="utf-8-sig", newline="") as f:
        quoted = list(csv.reader(f, delimiter="\t"))  # what default quote handling would make of the file
    assert len(quoted) < 7  # the fixture does catch a reader that forgets QUOTE_NONE
    # SST-2: lower-cased, tokenised, a space before the tab; the reader strips it
    raw = (root / "SST-2" / "train.tsv").read_text(encoding="utf-8").split("\n")
    assert raw[0] == "sentence\tlabel" and all(line.endswith((" \t0", " \t1")) for line in raw[1:-1])
    sst2 = read_glue(root, "sst2", "train")
    assert sst2.text_a[0] == raw[1].split("\t")[0].rstrip() and all(t == t.strip() for t in sst2.text_a)
    # CoLA: no header (the first line is data), no final newline in dev.tsv
    cola = read_glue(root, "cola", "dev")
    assert (root / "CoLA" / "dev.tsv").read_bytes()[-1:] != b"\n"
    assert cola.text_a[0] == "The dog chased the ball across the wet grass."
    assert cola.text_a[-1] == "How many did the farmer say apples were rotten?" and cola.labels[-1] == 0
    first = "The children finished the cake before their parents came home."
    assert read_glue(root, "cola", "train").text_a[0] == first
    # STS-B: ten columns, scores written as 5.000, 3.8, 0, 2.40000000000000
    stsb = read_glue(root, "stsb", "train")
    written = set(glue_fixture.expected("stsb", "train").labels)
    assert {"0", "5"} & written and any(len(x) > 10 for x in written)
    assert stsb.labels.min() >= 0.0 and stsb.labels.max() <= 5.0 and len(set(stsb.labels.tolist())) > 10
    # RTE: entailment → 0, not_entailment → 1 (GLUE's loaders' order)
    rte = read_glue(root, "rte", "dev")
    assert rte.labels.tolist() == [0 if x == "entailment" else 1 for x in glue_fixture.expected("rte", "dev").labels]
    assert load_task("SST-2", "dev", glue_dir=root).task == "sst2"
    assert load_task("sts-b", "dev", glue_dir=str(root)).text_b == glue_fixture.expected("stsb", "dev").text_b


def _fixture_copy(tmp_path: Path, *tasks: str) -> Path:
    """A writable GLUE-layout folder with `tasks`."""
    return write_glue(tmp_path / "glue", tasks)


def test_malformed_tsv_is_one_line_error(tmp_path: Path) -> None:
    root = _fixture_copy(tmp_path, "rte")
    path = root / "RTE" / "dev.tsv"
    assert len(read_glue(root, "rte", "dev")) == 6
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
    path.write_text("index\tsentence1\tsentence2\tlabel\n", encoding="utf-8")
    with pytest.raises(EvalError, match="no data rows"):
        read_glue(root, "rte", "dev")
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\t\xe9t\xe9\ty\tentailment\n")
    with pytest.raises(EvalError, match="not UTF-8 text"):
        read_glue(root, "rte", "dev")

    root = _fixture_copy(tmp_path, "stsb", "cola")
    path = root / "STS-B" / "dev.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tabout four"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(EvalError, match="row 3 score 'about four' is not a number"):
        read_glue(root, "stsb", "dev")
    path = root / "CoLA" / "train.tsv"
    path.write_text("sentence\tlabel\n" + path.read_text(encoding="utf-8"), encoding="utf-8")  # a header CoLA lacks
    with pytest.raises(EvalError, match=r"train.tsv:1: 2 fields, expected 4"):
        read_glue(root, "cola", "train")


def test_missing_task_dir_and_bad_names(tmp_path: Path) -> None:
    root = _fixture_copy(tmp_path, "rte")
    with pytest.raises(EvalError) as err:
        read_glue(root, "cola", "train")
    assert str(err.value).startswith(f"{root / 'CoLA'}: missing task directory") and "\n" not in str(err.value)
    (root / "RTE" / "train.tsv").unlink()
    with pytest.raises(EvalError, match="train.tsv: missing file"):
        read_glue(root, "rte", "train")
    assert len(read_glue(root, "rte", "dev")) == 6  # the other split still reads
    with pytest.raises(EvalError, match="--glue-dir is required"):
        read_glue(None, "rte", "dev")
    with pytest.raises(EvalError, match="no such directory"):
        read_glue(tmp_path / "nowhere", "rte", "dev")
    with pytest.raises(EvalError, match="not a GLUE task"):
        read_glue(root, "rotten_tomatoes", "dev")
    with pytest.raises(EvalError, match="choose train or dev"):
        read_glue(root, "rte", "test")
    with pytest.raises(EvalError, match="unknown task; choose from"):
        resolve_tasks(["cola", "qqp"])
    assert resolve_tasks(["CoLA", "sts-b", "rt", "cola"]) == ["cola", "stsb", "rotten_tomatoes"]


def test_glue_dir_unset_skips_and_incomplete_fails(tmp_path: Path) -> None:
    assert real_glue_dir("") is None  # unset or empty: the real-file tests skip
    with pytest.raises(ValueError, match="no such directory"):
        real_glue_dir(str(tmp_path / "nowhere"))
    partial = _fixture_copy(tmp_path, "cola", "sst2", "mrpc", "stsb", "rte")
    (partial / "RTE" / "dev.tsv").unlink()
    with pytest.raises(ValueError, match="incomplete GLUE folder, missing RTE/dev.tsv, WNLI/train.tsv, WNLI/dev.tsv"):
        real_glue_dir(str(partial))
    assert real_glue_dir(str(write_glue(tmp_path / "complete"))) == tmp_path / "complete"


# ---------------------------------------------------------------------------- the real GLUE files ($GLUE_DIR)


@needs_real_glue
@pytest.mark.parametrize("task,split", list(EXPECTED))
def test_real_glue_counts_and_labels(task: str, split: str) -> None:
    data = read_glue(real_glue(), task, split)
    rows, labels = EXPECTED[(task, split)]
    assert len(data) == rows
    assert data.label_counts() == labels
    assert all(t and t == t.strip() for t in data.text_a)  # SST-2's trailing space is stripped
    assert (data.text_b is not None) == TASKS[task].is_pair
    if data.text_b is not None:
        assert len(data.text_b) == rows and all(data.text_b)


@needs_real_glue
def test_real_glue_quirks() -> None:
    glue_dir = real_glue()
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


@needs_real_glue
@pytest.mark.parametrize("name,rows,size,sha256", REAL_FILES, ids=[f[0] for f in REAL_FILES])
def test_real_glue_file_checksums(name: str, rows: int, size: int, sha256: str) -> None:
    path = real_glue() / name
    assert path.is_file(), f"{path}: missing"
    data = path.read_bytes()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256, f"{path} differs from SOURCES.md"
    lines = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter="\t",
                            quoting=csv.QUOTE_NONE))
    assert len(lines) - (name not in NO_HEADER) == rows


@needs_real_glue
def test_fixture_has_the_real_files_layout(glue_fixture_dir: Path) -> None:
    """The fixture's headers, field counts, label strings, final newlines and spacing are those of GLUE's files."""
    real = real_glue()
    sources: dict[str, set] = {"ours": set(), "theirs": set(), "ours-fields": set(), "theirs-fields": set()}
    for task, split in FIXTURE_SPLITS:
        name = f"{FOLDERS[task]}/{split}.tsv"
        ours, theirs = ((root / name).read_text(encoding="utf-8") for root in (glue_fixture_dir, real))
        assert ours.endswith("\n") == theirs.endswith("\n"), name
        assert "\r" not in ours and "\r" not in theirs
        for first in (ours.split("\n", 1)[0], theirs.split("\n", 1)[0]):
            if HEADERS[task] is None:
                assert len(first.split("\t")) == 4 and first.split("\t")[1] in ("0", "1"), name  # data, no header
            else:
                assert first == HEADERS[task], name
        ours_rows, theirs_rows = (list(csv.reader(io.StringIO(text, newline=""), delimiter="\t",
                                                  quoting=csv.QUOTE_NONE)) for text in (ours, theirs))
        assert {len(r) for r in ours_rows} == {len(r) for r in theirs_rows}, name
        skip = HEADERS[task] is not None
        label = {"cola": 1, "sst2": 1, "mrpc": 0, "stsb": 9}.get(task, 3)
        if task != "stsb":
            assert {r[label] for r in ours_rows[skip:]} == {r[label] for r in theirs_rows[skip:]}, name
        if task == "cola":
            assert {r[2] for r in ours_rows} <= {r[2] for r in theirs_rows}  # original marks: "", "*", "?*", "??"
        if task == "sst2":
            assert all(r[0].endswith(" ") and r[0] == r[0].lower() for r in ours_rows[1:] + theirs_rows[1:])
        if task == "stsb":
            assert all(r[0] == str(i) and float(r[9]) >= 0 for i, r in enumerate(ours_rows[1:])), name
            for side, rows in (("ours", ours_rows[1:]), ("theirs", theirs_rows[1:])):
                sources[side] |= {tuple(r[1:4]) for r in rows}
                sources[side + "-fields"] |= {r[5] for r in rows} | {r[6] for r in rows}
    assert sources["ours"] <= sources["theirs"]  # (genre, filename, year) of GLUE's STS-B rows
    assert sources["ours-fields"] <= sources["theirs-fields"]


# ------------------------------------------------------------------------------------------------ the rest


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
