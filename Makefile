# The two commands the README gives: `make book` and `make test`.
# Each creates .venv and installs the pinned environment when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: help setup book test lint labs sync clean

help:
	@echo "make book   build the book into _build/html (executes chapters, with a cache)"
	@echo "make test   lint, unit tests, notebook runs, lab and grading self-tests"
	@echo "make labs   regenerate the student labs in labs/ from solutions/"
	@echo "make sync   rewrite generated setup cells and README links from _config.yml"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests tools
	$(BIN)/python tools/notebook_setup.py check

# Every notebook in chapters/ and solutions/ is executed exactly once, by nbval.
test: lint
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
		--nbval-lax --nbval-current-env --sanitize-with tests/sanitize.cfg \
		tests chapters solutions

labs: $(STAMP)
	$(BIN)/python tools/build_labs.py

sync: $(STAMP)
	$(BIN)/python tools/notebook_setup.py sync

clean:
	rm -rf _build .pytest_cache .ruff_cache
