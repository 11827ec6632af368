# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz bench chaos lint check dist clean cluster-failover

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/assay demo $(ARGS)

test: $(STAMP)
	bash tests/run.sh

# The fuzz tests of live layer processes at length (make test runs them with 200 examples per
# stream, one at a time, and 200 entries per stream at once).
FUZZ_EXAMPLES ?= 2000
FUZZ_BULK ?= 1000
fuzz: $(STAMP)
	ASSAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) ASSAY_FUZZ_BULK=$(FUZZ_BULK) $(BIN)/pytest tests/test_fuzz.py --timeout 3600 $(ARGS)

bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m bench $(ARGS)

# The long chaos suite: the whole demo under killed layers and servers; prints a table.
chaos: $(STAMP)
	env -u REDIS_URL -u DATABASE_URL $(BIN)/python -m tests.chaos $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/assay check config

dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) .assay dist

# A master of a 6-node local cluster killed mid-run; prints the loss window and time to resume.
cluster-failover: $(STAMP)
	$(BIN)/pytest tests/failover_cluster.py -s -q -p no:randomly
