"""`streamlit run app/main.py -- --runs DIR [DIR …]`: browse training runs and their learning dynamics.

With no `--runs`, it looks under `./runs` and `./experiments/results`. It only reads run directories
(`run.json`, `log.jsonl`, `snapshots/`) and results stores (`dynamics/results.sqlite`); nothing is trained,
extracted or measured here.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run` puts only app/ on the path
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402

PAGES = [
    st.Page("pages/overview.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("pages/anchors.py", title="Anchors", icon=":material/anchor:"),
    st.Page("pages/context.py", title="Context alignment", icon=":material/join_inner:"),
    st.Page("pages/geometry.py", title="Geometry", icon=":material/scatter_plot:"),
    st.Page("pages/cka.py", title="CKA", icon=":material/grid_on:"),
    st.Page("pages/tokens.py", title="Token explorer", icon=":material/bubble_chart:"),
]

st.set_page_config(page_title="taco-dynamics", page_icon=":material/monitoring:", layout="wide")
navigation = st.navigation(PAGES)
ui.sidebar()
navigation.run()
