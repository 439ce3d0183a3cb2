"""Objects of R data packages read without R: a lazy-load database (`Rdata.rdx` + `Rdata.rdb`) or an `.rda` file.

Data frames come back as {column: array}; the `rdata` package parses the serialisation.
"""

from __future__ import annotations

import bz2
import io
import lzma
import warnings
import zlib
from typing import Any


def _r_payload(chunk: bytes) -> bytes:
    """Decompress one lazy-load DB record: a 4-byte length, then zlib data or a type byte and the data."""
    body = chunk[4:]
    kind = body[:1]
    if kind == b"2":
        return bz2.decompress(body[1:])
    if kind == b"X":
        return lzma.decompress(body[1:])
    if kind == b"Z":
        return zlib.decompress(body[1:])
    if kind == b"0":
        return body[1:]
    return zlib.decompress(body)


def _as_columns(obj: Any, attrs: Any) -> Any:
    """Keep data frames as {column: array}: no pandas needed, and no warning for tibble classes."""
    return obj


_R_CONSTRUCTORS = {"data.frame": _as_columns, "tbl_df": _as_columns, "tbl": _as_columns}


def read_r_lazyload(rdx: bytes, rdb: bytes, name: str) -> Any:
    """One object of an R package's lazy-load database (`data/Rdata.rdx` + `Rdata.rdb`), without R."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.read_rds(io.BytesIO(rdx))
        offset, length = (int(x) for x in index["variables"][name])
        parsed = rdata.parser.parse_data(_r_payload(rdb[offset : offset + length]), extension=".rds")
        return rdata.conversion.convert(parsed, _R_CONSTRUCTORS)


def read_r_rda(data: bytes) -> dict[str, Any]:
    """All objects of an `.rda` file, data frames as column dicts."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(rdata.read_rda(io.BytesIO(data), constructor_dict=_R_CONSTRUCTORS))
