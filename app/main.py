"""`streamlit run app/main.py -- --runs DIR [DIR …]`: browse training runs and their learning dynamics.

With no `--runs`, it looks under `./runs` and `./experiments/results`. It only reads run directories
(`run.json`, `log.jsonl`, `snapshots/`) and results stores (`dynamics/results.sqlite`); nothing is trained,
extracted or measured here. Results are shown only by a server that listens on this machine or was told where to
listen (`app.serving`); usage statistics are off unless a setting turns them on.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run` puts only app/ on the path
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import serving, ui  # noqa: E402

# One module per page in app/views/ (not app/pages/: a folder of that name switches Streamlit, and AppTest on every
# rerun, to its legacy pages-directory mode, which runs a page without this script).
PAGES = [
    st.Page("views/overview.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("views/anchors.py", title="Anchors", icon=":material/anchor:"),
    st.Page("views/context.py", title="Context alignment", icon=":material/join_inner:"),
    st.Page("views/geometry.py", title="Geometry", icon=":material/scatter_plot:"),
    st.Page("views/cka.py", title="CKA", icon=":material/grid_on:"),
    st.Page("views/attention.py", title="Attention", icon=":material/visibility:"),
    st.Page("views/tokens.py", title="Token explorer", icon=":material/bubble_chart:"),
    st.Page("views/acquisition.py", title="Word acquisition", icon=":material/school:"),
    st.Page("views/seeds.py", title="Seeds & LLC", icon=":material/compare_arrows:"),
    st.Page("views/timeline.py", title="Timeline", icon=":material/timeline:"),
    st.Page("views/downstream.py", title="Downstream", icon=":material/leaderboard:"),
]

serving.quiet_usage_stats()
st.set_page_config(page_title="taco-dynamics", page_icon=":material/monitoring:", layout="wide")
navigation = st.navigation(PAGES)
if (problem := serving.check()) is not None:  # listening on every interface without being asked to
    st.error(problem, icon=":material/lan:")
    st.stop()
ui.sidebar()
navigation.run()
