"""User corpora: a .txt file, a directory of .txt files, a .jsonl file with a `text` field, a prepared
`train.jsonl`/`validation.jsonl` directory, or a directory written by `datasets`' `save_to_disk`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from taco.corpus.documents import Corpus, CorpusError, human_count, normalise_text, word_count
from taco.corpus.split import documents_fingerprint, split_mask

TEXT_CHUNK_WORDS = 1000  # a plain text file without document breaks is cut into chunks of about this size
USER_FORMATS = ("a .txt file, a directory of .txt files, a .jsonl file with a 'text' field, "
                "a directory saved with datasets' save_to_disk, or 'builtin'")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CorpusError(f"{path} is not UTF-8 text; convert it (e.g. `iconv -t utf-8`) and retry") from None


def split_plain_text(text: str, chunk_words: int = TEXT_CHUNK_WORDS) -> list[str]:
    """Documents of one text file: parts separated by two or more blank lines, or, when there are none,
    consecutive paragraphs (or lines, with no blank lines at all) grouped to about `chunk_words` words."""
    text = text.replace("\r\n", "\n")
    parts = [p for p in (normalise_text(p) for p in re.split(r"\n[ \t]*\n(?:[ \t]*\n)+", text)) if p]
    if len(parts) > 1:
        return parts
    units = [u for u in re.split(r"\n[ \t]*\n", text) if u.strip()]
    if len(units) <= 1:
        units = [u for u in text.split("\n") if u.strip()]
    docs: list[str] = []
    current: list[str] = []
    for unit in units:
        current.append(unit)
        if word_count(" ".join(current)) >= chunk_words:
            docs.append(normalise_text("\n\n".join(current)))
            current = []
    if current:
        docs.append(normalise_text("\n\n".join(current)))
    return [d for d in docs if d]


def read_jsonl(path: Path) -> list[str]:
    """The `text` field of every line of a JSONL file (blank lines skipped)."""
    texts = []
    for number, line in enumerate(_read_utf8(path).split("\n"), start=1):  # not splitlines(): U+2028 is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CorpusError(f"{path}: line {number} is not valid JSON; write one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CorpusError(f'{path}: line {number} has no string "text" field; write lines like '
                              '{"text": "..."}')
        texts.append(row["text"])
    return texts


def read_text_dir(path: Path) -> list[str]:
    """One document per `.txt` file under `path` (recursively, in sorted order)."""
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{path} contains no .txt files; pass {USER_FORMATS}")
    return [_read_utf8(p) for p in files]


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def read_saved_dataset(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts of a `save_to_disk` directory: (train, validation or None when it has no validation split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for unreadable directories
        raise CorpusError(f"cannot load saved dataset {path} ({type(exc).__name__}: {exc}); "
                          f"pass {USER_FORMATS}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        rest = [n for n in names if n != "validation"]
        train_name = "train" if "train" in loaded else rest[0] if len(rest) == 1 else None
        if train_name is None:
            raise CorpusError(f"saved dataset {path} has splits {names} but no 'train'; rename the training split")
        parts = {"train": loaded[train_name], "validation": loaded.get("validation")}
    else:
        parts = {"train": loaded, "validation": None}
    texts: dict[str, list[str] | None] = {}
    for name, ds in parts.items():
        if ds is None:
            texts[name] = None
        elif "text" not in ds.column_names:
            raise CorpusError(f"saved dataset {path} has no 'text' column (columns: {ds.column_names}); "
                              "rename the text column to 'text'")
        else:
            texts[name] = [t for t in ds["text"] if isinstance(t, str)]
    return texts["train"] or [], texts["validation"]


def read_prepared(path: Path) -> tuple[list[str], list[str]]:
    """Texts of a directory holding `train.jsonl` and optionally `validation.jsonl` (the built-in layout)."""
    val = path / "validation.jsonl"
    return read_jsonl(path / "train.jsonl"), read_jsonl(val) if val.is_file() else []


def read_user_corpus(path: Path) -> tuple[list[str], list[str] | None]:
    """Documents at a user path: (train, validation) when the format carries a split, else (all, None)."""
    if path.is_dir():
        if (path / "train.jsonl").is_file():
            return read_prepared(path)
        if _is_saved_dataset(path):
            return read_saved_dataset(path)
        return read_text_dir(path), None
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path), None
    if path.suffix.lower() in (".txt", ".text", ".md", ""):
        return split_plain_text(_read_utf8(path)), None
    raise CorpusError(f"{path}: unsupported corpus file type {path.suffix!r}; pass {USER_FORMATS}")


def load_user_corpus(path: str | Path, validation_fraction: float, seed: int) -> Corpus:
    """The `Corpus` at a user path, split by seeded hashes of the documents' texts unless its format has a split."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise CorpusError(f"corpus {resolved} does not exist; pass {USER_FORMATS}")
    resolved = resolved.resolve()
    docs, given_validation = read_user_corpus(resolved)
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"corpus {resolved} contains no text; pass {USER_FORMATS}")
    if given_validation is not None:
        train, validation = docs, [d.strip() for d in given_validation if d.strip()]
    else:
        mask = split_mask(docs, validation_fraction, seed=seed)
        train = [d for d, v in zip(docs, mask, strict=True) if not v]
        validation = [d for d, v in zip(docs, mask, strict=True) if v]
    words = sum(word_count(d) for d in train) + sum(word_count(d) for d in validation)
    description = f"{resolved.name}: {len(train) + len(validation)} documents, {human_count(words)} words"
    return Corpus(train, validation, documents_fingerprint(train, validation), str(resolved), description)
