"""What the app reads, as tidy DataFrames, one module per source; pages import the module they need.

* `sources`: finding run directories and results stores under the directories the app was given;
* `stamps`: the modification stamps that key the caches;
* `store_open`: opening a results store read-only, its failures as `DataError`s (`errors`);
* `store_tables`: runs, probe sets, metric definitions, rows and catalogue, measured snapshots and notes of a
  store;
* `store_arrays`: CKA matrices and token projections (the store's `.npz` arrays) as tidy frames;
* `downstream`: downstream scores (`experiments.evaluate`'s rows) and their summaries;
* `run_files`: a run directory's run.json, training log and snapshot steps (through `common.run_dir`);
* `runs_table`: the Runs table, joining stores and run directories;
* `frames`: pure reshaping of loaded frames for the charts (thinning, differences, coverage, distances).

Every loader that reads a file takes the file's `stamp` (modification times and sizes; for a store, those of the
database and its `-wal` file) as an argument, so `st.cache_data` keys on (path, stamp): while `dynamics.probe`
is still writing, the next rerun sees a new stamp and reads the new rows (SQLite WAL lets readers in at any
time). Stores are read only through `dynamics.results.store` (read-only), which reads an older store through a
compatibility view (what its file lacks reads as empty tables and NULL columns; `store_tables.store_problems` says
what) and refuses a newer one. Labels, units, definitions, pointers and pages of metrics come from the store's
`definitions` table (`store_tables.definitions`), not from the metric modules. Problems the user should see
become `DataError`s, which the pages turn into a message.
"""
