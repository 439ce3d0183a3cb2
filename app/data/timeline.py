"""The order of learning and the phases of curves, from a store's `onsets` and `phases` tables: seed groups' mean
onsets with their Student-t intervals (`dynamics.results.onsets.group_onsets`) and one curve's phases."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from app.data.errors import named
from app.data.seed_groups import store_groups
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.data.store_tables import typed
from dynamics.results.groups import Group
from dynamics.results.onsets import GROUP_COLUMNS, group_onsets

PHASE_COLUMNS = ["run", "layer", "variant", "phase", "start_step", "end_step", "direction", "size"]


@named("table `onsets`")
@st.cache_data(show_spinner=False, max_entries=64)
def group_onset_table(db: str, stamp: Stamp, probe_hash: str | None = None,
                      runs: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Every curve's onset per seed group of the store's runs (those in `runs` when given; a run without seeds is
    a group of its own): `group_onsets`' columns (group, objective, metric, layer, variant, mean and interval of
    log10 step, n, runs, and the same as steps)."""
    groups: Sequence[Group] = store_groups(db, stamp)
    with open_store(db) as s:
        df = typed(s.onsets(probe_hash), whole=("layer",), numbers=("step", "tokens_seen"))
    if runs is not None:
        keep = set(runs)
        groups = [Group(g.label, g.key, tuple(r for r in g.runs if r in keep),
                        tuple(sd for r, sd in zip(g.runs, g.seeds, strict=True) if r in keep), g.objective)
                  for g in groups]
        groups = [g for g in groups if g.runs]
    if df.empty or not groups:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    return group_onsets(df, groups)


@named("table `phases`")
@st.cache_data(show_spinner=False, max_entries=64)
def phase_rows(db: str, stamp: Stamp, metric: str, runs: tuple[str, ...], probe_hash: str | None = None
               ) -> pd.DataFrame:
    """The stored phases of `metric` for `runs` (`PHASE_COLUMNS`; none for a store written before phases were
    stored)."""
    with open_store(db) as s:
        df = typed(s.phases(probe_hash, run=list(runs), metric=metric), whole=("layer", "phase"),
                   numbers=("start_step", "end_step", "size"))
    if df.empty:
        return pd.DataFrame(columns=PHASE_COLUMNS)
    return df[PHASE_COLUMNS].reset_index(drop=True)
