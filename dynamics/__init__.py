"""Measuring how a language model's representations change over training (`python -m dynamics.probe`).

The probe's stages, one subpackage each: `find/` (finding the snapshot series and checking every input),
`measure/` (the probe set, extraction, the families and the one engine that turns registered metrics into rows),
`metrics/` (the metric registry and its pure functions), `results/` (the store, onsets, seed groups, figures and
the report). At the top: `probe` (the command line and `dynamics.probe.run`), `pipeline` (the stages in order),
`setup` (a probe run's records and opening the store), `follow` (measuring runs as they are written), `shards`
(several processes under torchrun), `config` (settings and their flags) and `errors`.
"""
