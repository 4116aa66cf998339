PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Let Python keep the bytecode it compiles (in ignored __pycache__ folders). A shell that sets
# PYTHONDONTWRITEBYTECODE made every process of a run compile the sources again: each test
# worker, server, CLI run and Dask worker (collecting the suite took 14.2 s instead of 9.0).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast bench serve lint clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fusion demo --out runs/demo

# Two workers, a whole test module at a time each (tests/conftest.py puts the heaviest first), one
# thread each for xgboost, OpenMP and polars, so the two share the two cores instead of fighting.
# --no-loadscope-reorder: pytest-xdist otherwise re-sorts modules by their number of tests, which
# started the ten-test acceptance module (three minutes) late and left it running alone at the end.
PYTEST := OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=1 \
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

test: $(STAMP) browser
	$(PYTEST)

# Debian's chromium for the console's browser tests (tests/api/console/test_browser.py), installed
# by apt only when /usr/bin/chromium is missing: nothing to do, and no network, once it is there.
CHROMIUM := /usr/bin/chromium

browser: $(CHROMIUM)

$(CHROMIUM):
	@test -w /var/lib/dpkg || { echo "run as root, or: sudo apt-get install chromium"; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# The inner loop: everything not marked slow (no servers, clusters or trained demo models).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(BIN)/fusion bench --out bench/results $(if $(SCALE_SIZES),--scale-sizes $(SCALE_SIZES))

serve: $(STAMP)
	$(BIN)/fusion serve --run runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts matcher fusion labs api

clean:
	rm -rf runs bench/results .pytest_cache .mypy_cache .ruff_cache
