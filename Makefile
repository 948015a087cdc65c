# The two commands the README gives: `make book` and `make test`.
# Each creates .venv and installs the pinned environment when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: help setup book test lint labs autograders sync browser sandbox clean gpu-check

help:
	@echo "make book   build the book into _build/html (executes chapters, with a cache)"
	@echo "make test   lint, unit tests, notebook runs, lab and grading self-tests"
	@echo "make labs   regenerate the student labs in labs/ from solutions/"
	@echo "make autograders  build _build/autograder/*.zip (for llmbook-grade) without"
	@echo "            re-executing the masters"
	@echo "make sync   rewrite generated setup cells and README links from _config.yml"
	@echo "make gpu-check  run the GPU paths on a CUDA GPU (<= 8 min), report in GPU_CHECK_OUT"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# On a CUDA GPU: the GPU paths the chapters promise, <= 8 minutes, report.md + .json.
# Without a GPU it runs its CPU smoke mode (seconds) and says so in the report.
GPU_CHECK_OUT ?= benchmarks/results/gpu-check
gpu-check: $(STAMP)
	$(BIN)/python -m llmbook.gpu_check --out $(GPU_CHECK_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests tools
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python tools/notebook_setup.py check

# A headless Chromium for the browser tests: found, or installed with apt when root.
# Without one those tests skip, saying why in one line; the rest still runs.
browser: $(STAMP)
	-$(BIN)/python tools/find_browser.py

# bubblewrap, the sandbox llmbook-grade runs each submission in: found, or installed
# with apt when root. Without it the grading attack tests skip (CI makes that fail).
sandbox:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } \
		|| echo "bubblewrap not installed: the grading sandbox tests will skip"

# Stage 1 (both cores): unit tests, lab/grading self-tests, every chapter executed
# exactly once (tests/chapters/test_notebooks_execute.py, which leaves the results in the book's
# execution cache), and every lab master in solutions/ run by nbval (--nbval-lax: cells
# marked `# NBVAL_CHECK_OUTPUT` must reprint their stored output, after tests/sanitize.cfg).
# Stage 2: one book build that reuses that cache (-W: zero warnings), then the
# browser tests on it.
# OMP_NUM_THREADS=1: the two workers already fill the two cores; letting each
# notebook's PyTorch start a thread per core as well oversubscribes them, and runs
# that take seconds then take minutes.
test: lint browser sandbox
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadscope -m "not book" \
		tests solutions --nbval-lax --nbval-current-env --nbval-cell-timeout 600 \
		--nbval-sanitize-with tests/sanitize.cfg
	$(BIN)/python -m pytest -m book tests

labs: $(STAMP)
	$(BIN)/python tools/build_labs.py

# The instructors' grading zips, _build/autograder/<lab>.zip, from the masters as they
# are committed (their stored outputs are not refreshed: no notebook is re-executed in
# place). Each master's solution still runs once, unsandboxed, to record the reference
# values llmbook-grade compares with: a few seconds to a minute per lab. labs/ is
# rewritten only where it is out of date, exactly as `make labs` would.
autograders: $(STAMP)
	$(BIN)/python tools/build_labs.py --no-execute

sync: $(STAMP)
	$(BIN)/python tools/notebook_setup.py sync

clean:
	rm -rf _build .pytest_cache .ruff_cache
