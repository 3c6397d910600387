# Every target bootstraps .venv on its own, so a fresh clone needs nothing but `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NATIVE := $(VENV)/.native-stamp

.PHONY: demo test bench lint clean nemesis

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The optional C fingerprint extension (tidemark/native): a failed build only warns.
$(NATIVE): $(STAMP) tidemark/native/fingerprint.c
	$(BIN)/python -m tidemark.native
	touch $(NATIVE)

demo: $(NATIVE)
	$(BIN)/tidemark demo

lint: $(STAMP)
	$(BIN)/ruff check tidemark tests bench

test: $(NATIVE) lint
	$(BIN)/python -m pytest -q -n 2

NEMESIS_SEEDS ?= 1..200
NEMESIS_STEPS ?= 40
# NEMESIS_SUBPROCESS=1: also run the seeds in subprocess mode (job statements in a child that
# is SIGKILLed mid-job, the job adopted here); NEMESIS_SUBPROCESS=only: subprocess mode only
NEMESIS_SUBPROCESS ?=

nemesis: $(NATIVE)
ifneq ($(NEMESIS_SUBPROCESS),only)
	$(BIN)/tidemark nemesis --seeds $(NEMESIS_SEEDS) --steps $(NEMESIS_STEPS)
endif
ifneq ($(filter 1 only,$(NEMESIS_SUBPROCESS)),)
	$(BIN)/tidemark nemesis --seeds $(NEMESIS_SEEDS) --steps $(NEMESIS_STEPS) --subprocess
endif

bench: $(NATIVE)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis tidemark/native/*.so
