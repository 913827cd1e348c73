# Set-up is part of every target: a .venv in the repo root, the project and its test extras.
# torch: TORCH_SPEC picks the wheel. The default, torch==2.13.0, is the CPU build on this
# machine's disk (a plain `pip install torch` would pull a multi-GB CUDA build). On a GPU
# machine use e.g. `make gpu-verify TORCH_SPEC=torch` or keep the torch already installed there
# (a device session without network: tools/device/run.sh, see tools/device/README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test test-slow report report-quick bench gpu-verify gpu-check install clean docs pep-cache bench-peers

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

.PHONY: check-peers
PEERS_STAMP := $(VENV)/.peers-installed
$(PEERS_STAMP): $(STAMP)
	@echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	@$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -e ".[test,peers]" && touch $(PEERS_STAMP) || \
	  echo "note: the peers extra could not be installed; torchopt/jaxopt will be listed as skipped"

# every library on one thread: same-run ratios on a shared machine
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

bench-peers: $(STAMP) $(PEERS_STAMP)
	$(ONE_THREAD) $(PY) -m pytest -q benchmarks/test_peers.py --benchmark-only -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only -p no:cacheprovider -m "not slow or slow"

# all GPU evidence within BUDGET seconds (GPU_FLAGS=--dry-run: tiny sizes on the CPU)
BUDGET ?= 420
GPU_FLAGS ?=
gpu-verify: $(STAMP)
	$(PY) -m verify gpu --budget $(BUDGET) $(GPU_FLAGS)

# only the few-shot stage of gpu-verify, into reports/gpu
gpu-check: $(STAMP)
	$(PY) -m verify gpu --budget $(BUDGET) --stage fewshot $(GPU_FLAGS)

pep-cache: $(STAMP) $(PEP_STAMP)
	$(PY) -c "from verify.figures import pep; pep.refresh()"

docs: $(STAMP)
	$(PY) -m verify.docs --write

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks

# the checker on real libraries (docs/checker.md): the optional peers extra (torchopt, jax, jaxopt)
# is installed with torch pinned to TORCH_SPEC, so that it never pulls another torch build;
# without it those libraries are listed as skipped. Writes reports/peers/peers.{json,md}.
check-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) -m verify.checker.peers --out reports/peers

# mutation testing of theory/, solvers/ and the verdict layer (verify/checks/, verify/checker/)
# with the fast tests (not part of make test; long): tools/mutate.py; the surviving mutants, each
# argued equivalent, are listed in tools/surviving_mutants.md
.PHONY: mutate
mutate: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py theory --out .mutation/theory.json
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py solvers --out .mutation/solvers.json
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py verify/checks --out .mutation/checks.json
	OMP_NUM_THREADS=1 $(PY) tools/mutate.py verify/checker --out .mutation/checker.json
