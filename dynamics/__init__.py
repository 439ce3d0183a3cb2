"""Measuring how a masked language model's representations change over training (`python -m dynamics.probe`).

Modules, one job each: `run_dir` (reading a run directory of `taco.train`), `series` (finding snapshot series on
disk), `tokens` (a light tokenizer view), `probe_set` (the frozen, hashed probe tokens), `extract` (loading a
snapshot and collecting hidden states),
`metrics/` (pure metric functions), `families` (metric functions → tidy rows and arrays per snapshot),
`store` (the SQLite + .npz results store; `dynamics.store.open`), `figures`, `report`, `config` (settings and
their CLI flags) and `probe` (the CLI and `dynamics.probe.run`).
"""
