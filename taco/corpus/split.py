"""The train/validation split (seeded hashes of document keys) and the content fingerprint of a split corpus."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def split_mask(keys: Sequence[str], fraction: float, *, seed: int = 0, min_validation: int = 1) -> list[bool]:
    """Which keys go to validation: the `round(fraction * n)` (at least `min_validation`, at most n - 1)
    keys with the smallest seeded SHA-256.

    Hashing keys rather than shuffling makes the split independent of document order and stable when
    documents are added; taking the k smallest gives an exact, never-empty count even for small sources.
    """
    n = len(keys)
    if fraction <= 0 or n < 2:
        return [False] * n
    k = min(n - 1, max(min_validation, round(fraction * n)))
    order = sorted(range(n), key=lambda i: (hashlib.sha256(f"{seed}\x00{keys[i]}".encode()).digest(), i))
    chosen = set(order[:k])
    return [i in chosen for i in range(n)]


def documents_fingerprint(train: Sequence[str], validation: Sequence[str]) -> str:
    """SHA-256 over both splits' texts (length-prefixed): the same documents give the same fingerprint."""
    digest = hashlib.sha256()
    for name, docs in (("train", train), ("validation", validation)):
        digest.update(f"{name}:{len(docs)}\n".encode())
        for doc in docs:
            data = doc.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()
