# Every target bootstraps .venv on its own, so a fresh clone needs nothing but `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench lint clean nemesis

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tidemark demo

lint: $(STAMP)
	$(BIN)/ruff check tidemark tests bench

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2

NEMESIS_SEEDS ?= 1..200
NEMESIS_STEPS ?= 40

nemesis: $(STAMP)
	$(BIN)/tidemark nemesis --seeds $(NEMESIS_SEEDS) --steps $(NEMESIS_STEPS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
