"""Reading what an `AppTest` run drew: chart titles, data and specs, the page's text, and failures."""

from __future__ import annotations

import json

import pandas as pd


def charts(at: object) -> list[tuple[str, pd.DataFrame, dict]]:
    """(title, data, spec) of every Altair chart on the page, data decoded from the Arrow the app sent."""
    import pyarrow as pa

    out = []
    for el in at.get("vega_lite_chart"):  # type: ignore[attr-defined]
        spec = json.loads(el.proto.spec)
        title = spec.get("title", "")
        title = title.get("text", "") if isinstance(title, dict) else title
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        if el.proto.data.data:
            frames.append(pa.ipc.open_stream(el.proto.data.data).read_all().to_pandas())
        out.append((title, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), spec))
    return out


def texts(at: object) -> str:
    """Everything the page wrote as text (titles, markdown, captions, info, warnings), one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def assert_clean(at: object) -> None:
    """No exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]  # type: ignore[attr-defined]
    assert not at.error, [e.value for e in at.error]  # type: ignore[attr-defined]
