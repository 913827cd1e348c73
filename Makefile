# Set-up is part of every target: a .venv in the repo root, the project and its test extras.
# torch: TORCH_SPEC picks the wheel. The default, torch==2.13.0, is the CPU build on this
# machine's disk (a plain `pip install torch` would pull a multi-GB CUDA build). On a GPU
# machine use e.g. `make gpu-check TORCH_SPEC=torch` or keep the torch already installed there.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test test-slow report report-quick bench gpu-check install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --hypothesis-profile=thorough

# figure 7 needs the optional pep extra (PEPit, cvxpy, Clarabel): installed here when possible;
# without it the report still runs and says that figure 7 was skipped
PEP_STAMP := $(VENV)/.pep-installed
$(PEP_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[test,pep]" && touch $(PEP_STAMP) || \
	  echo "note: the pep extra could not be installed; figure 7 will be skipped"

report: $(STAMP) $(PEP_STAMP)
	$(PY) -m verify run

report-quick: $(STAMP)
	$(PY) -m verify run --quick --out reports/quick

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only -p no:cacheprovider -m "not slow or slow"

gpu-check: $(STAMP)
	$(PY) -m verify.fewshot.gpu_check --out reports/gpu

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks

# mutation testing of theory/ and solvers/ with the fast tests (not part of make test; long):
# tools/mutate.py; the surviving mutants, each argued equivalent or left open, are listed in
# tools/surviving_mutants.md
.PHONY: mutate
mutate: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py theory --out .mutation/theory.json
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py solvers --out .mutation/solvers.json
