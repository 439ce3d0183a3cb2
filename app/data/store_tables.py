"""Cached loaders of a results store's tables: what an older store lacks, the stored metric definitions, probe
sets, runs, the metric catalogue, one metric's rows, measured snapshots, notes and snapshot-integrity flags (each
keyed on the store's path and `stamp`). The schema itself is `dynamics.results.store.SCHEMA`'s."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.definitions import Definitions, MetricDef, page_of
from dynamics.find import integrity
from dynamics.results.store import SCHEMA_VERSION

# What a store without the table cannot show (the page says so beside the missing table).
_LOST = {"runs": "run names and paths", "snapshots": "the snapshot list", "probe_sets": "the probe set",
         "metrics": "all metric curves", "arrays": "CKA heatmaps and token projections",
         "completed": "progress (measured snapshots)", "notes": "notes", "onsets": "onset markers"}
# Columns that hold numbers (SQLite keeps whatever text is written into them); a row with text in one is left
# out by `typed` and counted by `store_warnings`. metrics.value has its own count (`Store.value_problems`).
NUMERIC: dict[str, tuple[str, ...]] = {
    "snapshots": ("step", "tokens_seen"), "metrics": ("step", "layer", "tokens_seen"), "completed": ("step",),
    "notes": ("step",), "onsets": ("step", "layer", "tokens_seen"), "arrays": ("step",),
    "probe_sets": ("n_blocks", "n_tokens"),
}


def typed(df: pd.DataFrame, whole: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> pd.DataFrame:
    """`df` with the `whole` columns as int64 (where every value is known) and the `numbers` columns as floats;
    rows holding anything else there (text where a step or layer belongs, a step of 2.5) are left out —
    `store_warnings` says how many — so that one damaged row does not take a page down. Nulls stay (an older
    store lacks the column)."""
    bad = pd.Series(False, index=df.index)
    out = df.copy()
    for col in (*whole, *numbers):
        if col not in out:
            continue
        value = pd.to_numeric(out[col], errors="coerce")
        bad |= value.isna() & out[col].notna()
        if col in whole:
            bad |= value.notna() & (value % 1 != 0)
        out[col] = value
    out = out[~bad]
    for col in whole:
        if col in out and out[col].notna().all():
            out[col] = out[col].astype(np.int64)
    return out


@named("its tables")
@st.cache_data(show_spinner=False, max_entries=64)
def store_problems(db: str, stamp: Stamp) -> list[str]:
    """What an older (or damaged) store lacks, in words, with what it costs: the tables and columns missing from
    its file (`Store.gaps`: read through the compatibility view, nothing written), or recorded when an older store
    was upgraded in place (`Store.upgraded`); and, for a store older than the schema, that it stores no metric
    definitions."""
    with open_store(db) as s:
        version = s.file_version
        lacked = s.gaps.lines(upto=version)
        upgraded = s.upgraded()
    if not lacked and upgraded:
        lacked = [str(line) for line in upgraded.get("lacked", [])]
    out = [f"{line}, so no {_LOST[line.split('`')[1]]}" if line.startswith("no `") and line.split("`")[1] in _LOST
           else line for line in lacked]
    if version < SCHEMA_VERSION:
        out.append(f"store schema {version} (this app reads {SCHEMA_VERSION}): no metric definitions, so curves "
                   "are labelled by their names")
    return out


@named("its tables")
@st.cache_data(show_spinner=False, max_entries=64)
def store_warnings(db: str, stamp: Stamp) -> list[str]:
    """What in a readable store is left out, in words: metric values that are not numbers or not finite, rows of
    any table with text where numbers belong (`NUMERIC`). (A store of a newer schema is not read at all:
    `open_store` names it.)"""
    with open_store(db) as s:
        text, infinite = s.value_problems()
        rows = {}
        for table, cols in NUMERIC.items():
            kinds = [f"typeof({c}) IN ('text', 'blob')" for c in cols]
            counts = s.conn.execute(f"SELECT count(*), {', '.join(f'total({k})' for k in kinds)} FROM {table} "
                                    f"WHERE {' OR '.join(kinds)}").fetchone()
            rows[table] = (int(counts[0]), [c for c, n in zip(cols, counts[1:], strict=True) if n])
    out = []
    if text:
        out.append(f"{text} metric value(s) are not numbers (left out of the charts)")
    if infinite:
        out.append(f"{infinite} metric value(s) are not finite (left out of the charts)")
    out += [f"{n} row(s) of table `{table}` hold text where numbers belong ({', '.join(cols)}; left out)"
            for table, (n, cols) in rows.items() if n]
    return out


@named("table `definitions`")
@st.cache_data(show_spinner=False, max_entries=64)
def definitions(db: str, stamp: Stamp) -> Definitions:
    """The metric definitions the probe stored (`Store.write_definitions`), by name, in registry order: label,
    definition, pointer, unit, family, scope, page. Empty for a store written before definitions were stored."""
    with open_store(db) as s:
        df = s.definitions()
    return {str(r.name): MetricDef(str(r.name), _text(r.label) or str(r.name).replace("_", " "), _text(r.definition),
                                   _text(r.pointer), _text(r.unit), _text(r.family) or None, _text(r.scope) or None,
                                   _text(r.page) or None, _int_or_none(r.position))
            for r in df.itertuples(index=False)}


@named("table `probe_sets`")
@st.cache_data(show_spinner=False, max_entries=64)
def probe_sets(db: str, stamp: Stamp) -> pd.DataFrame:
    """The store's probe sets, most recently used first: hash, source, n_blocks, n_tokens, used."""
    with open_store(db) as s:
        return s.probe_sets()[["hash", "source", "n_blocks", "n_tokens", "used"]]


@named("tables `runs`, `snapshots` and `completed`")
@st.cache_data(show_spinner=False, max_entries=64)
def store_runs(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """One row per run of the store: run, path, kind, objective, preset, snapshots (known), measured (snapshots
    with results under the probe set), last_step, last_tokens, probe_hash."""
    with open_store(db) as s:
        runs = s.runs()
        snaps = typed(s.snapshots(), whole=("step",), numbers=("tokens_seen",))
        h = probe_hash or s.latest_probe_hash()
        done = typed(s.completed(h), whole=("step",))
    names = sorted(set(runs["name"].dropna()) | set(snaps["run"].dropna()) | set(done["run"].dropna()))
    rows = []
    for name in names:
        info = runs[runs["name"] == name]
        meta = _json(info["meta"].iloc[0]) if len(info) else {}
        sn = snaps[snaps["run"] == name].sort_values("step")
        measured = done[(done["run"] == name) & (done["step"] >= 0)]["step"].nunique()
        rows.append({
            "run": name,
            "path": info["path"].iloc[0] if len(info) else None,
            "kind": info["kind"].iloc[0] if len(info) else None,
            "objective": (info["objective"].iloc[0] if len(info) else None) or meta.get("objective"),
            "preset": meta.get("preset"),
            "snapshots": len(sn),
            "measured": int(measured),
            "last_step": int(sn["step"].iloc[-1]) if len(sn) else None,
            "last_tokens": _int_or_none(sn["tokens_seen"].iloc[-1]) if len(sn) else None,
            "probe_hash": h if measured else None,
        })
    return pd.DataFrame(rows, columns=["run", "path", "kind", "objective", "preset", "snapshots", "measured",
                                       "last_step", "last_tokens", "probe_hash"])


@named("table `metrics`")
@st.cache_data(show_spinner=False, max_entries=64)
def metric_catalog(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Distinct (family, metric, variant) stored under the probe set (`Store.metric_list`) and the page that shows
    each (`page_of`: its stored definition's, else its family's); where an older store's rows have no family, the
    family its stored definition names, else "unknown"; no variant reads as "all"."""
    cols = ["family", "metric", "variant"]
    with open_store(db) as s:
        df = s.metric_list(probe_hash)
    defs = definitions(db, stamp)
    stored = df["metric"].map(lambda m: defs[m].family if m in defs else None)
    df["family"] = df["family"].where(df["family"].notna(), stored).fillna("unknown")
    df["variant"] = df["variant"].fillna("all")
    df = df[cols].drop_duplicates().sort_values(cols).reset_index(drop=True)
    df["page"] = [page_of(m, f, defs) for m, f in zip(df["metric"], df["family"], strict=True)]
    return df


@named("table `metrics`")
@st.cache_data(show_spinner=False, max_entries=256)
def metric_rows(db: str, stamp: Stamp, metric: str, runs: tuple[str, ...] | None = None,
                probe_hash: str | None = None) -> pd.DataFrame:
    """Tidy rows of one metric: run, step, tokens_seen, layer, variant, value (NaN where undefined)."""
    with open_store(db) as s:
        df = s.metrics(metric, run=None if runs is None else list(runs), probe_hash=probe_hash)
    df = typed(df[df["metric"] == metric] if len(df) else df, whole=("step", "layer"))
    out = df[["run", "step", "tokens_seen", "layer", "variant", "value"]].copy()
    out["variant"] = out["variant"].fillna("all")
    value = pd.to_numeric(out["value"], errors="coerce").astype(float)
    out["value"] = value.where(np.isfinite(value))  # ±inf cannot be drawn; `store_warnings` counts them
    out["tokens_seen"] = pd.to_numeric(out["tokens_seen"], errors="coerce")
    return out.sort_values(["run", "variant", "layer", "step"]).reset_index(drop=True)


@named("table `completed`")
@st.cache_data(show_spinner=False, max_entries=64)
def measured(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Finished (run, step, family) units under the probe set (step −1 marks run-level families)."""
    with open_store(db) as s:
        return typed(s.completed(probe_hash), whole=("step",))[["run", "step", "family"]]


@named("table `notes`")
@st.cache_data(show_spinner=False, max_entries=64)
def notes(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Notes recorded while measuring: run, step, family, note."""
    with open_store(db) as s:
        return typed(s.notes(probe_hash), whole=("step",))[["run", "step", "family", "note"]]


@named("the integrity flags (table `notes`)")
@st.cache_data(show_spinner=False, max_entries=64)
def integrity_flags(db: str, stamp: Stamp) -> pd.DataFrame:
    """The probe's snapshot-integrity flags (`dynamics.find.integrity`: notes of family "integrity", kept apart from any
    probe set): run, step, note. Empty when there are none, or the store predates the check."""
    with open_store(db) as s:
        df = s.notes(integrity.PROBE_HASH)  # a flag is shown whatever its step says: it is not drawn on an axis
    return df[df["family"] == integrity.FAMILY][["run", "step", "note"]].reset_index(drop=True)


def _json(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError, OverflowError):
        return None
