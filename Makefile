# Two commands for a fresh machine (see README):
#   make run    install, then `dvc repro` on the embedded demo data
#   make test   install, then lint + the test suite
VENV ?= .venv
BIN := $(VENV)/bin
# Stages call `python -m pipeline.cli ...`: run them with the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run pull push test lint bench sweep serve flow clean

install: $(VENV)/.installed

# torch first, pinned, by pip: it takes the local CPU wheel instead of GBs of CUDA packages. The rest
# by uv (same resolution, about 40 s instead of 3 min: it keeps the torch pip installed); pip if uv fails.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (these machines), every process
# would otherwise compile its imports from source (each stage and test process twice as slow to start).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0" "uv>=0.13,<0.14"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]" \
		|| { echo "uv failed: installing with pip (about 3 min)"; $(BIN)/pip install --quiet -e ".[dev]"; }
	touch $@

run: install
	$(BIN)/dvc repro

# Outputs through the DVC remote (.dvc/config; README "Reusing outputs"): `make pull` before
# `make run` fetches what another clone or CI computed (outputs + run-cache: unchanged stages are
# restored, not rerun); `make push` shares yours.
pull: install
	$(BIN)/dvc pull --run-cache --allow-missing

push: install
	$(BIN)/dvc push --run-cache

# Tests run in parallel (pytest-xdist; an idle worker steals queued tests). The tiny pipelines of the
# test workspaces share one DVC cache and run-cache (tests/conftest.py), so their stages run once.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n auto --dist worksteal

lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/bench_frames.py
	$(BIN)/python bench/bench_landmarks.py
	$(BIN)/python bench/bench_windows.py
	$(BIN)/python bench/bench_monitor.py

# window-size sweep: one `dvc exp run` per size, then a table of macro-F1 per model and size
SIZES ?= 30 60 90 120
sweep: install
	$(BIN)/python -m pipeline.cli sweep $(foreach s,$(SIZES),--sizes $(s))

# local Prefect server on 127.0.0.1 + deployment (cron + on-change trigger) + file watcher (README)
PORT ?= 4200
INBOX ?=
serve: install
	$(BIN)/python -m flows serve --port $(PORT) $(if $(INBOX),--inbox,)

# one Prefect flow run now (dvc status -> the stale stages as tasks -> artifacts)
flow: install
	$(BIN)/python -m flows run

clean:
	rm -rf $(VENV)
