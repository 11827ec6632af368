# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint check clean cluster-failover

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/assay demo $(ARGS)

test: $(STAMP)
	bash tests/run.sh

bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/assay check config

clean:
	rm -rf $(VENV) .assay

# A master of a 6-node local cluster killed mid-run; prints the loss window and time to resume.
cluster-failover: $(STAMP)
	$(BIN)/pytest tests/failover_cluster.py -s -q -p no:randomly
