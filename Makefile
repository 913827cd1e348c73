# Set-up is part of every target: a .venv in the repo root, the project and its test extras, at
# the versions locked in constraints.txt (`make lock` refreshes it). torch: TORCH_SPEC picks the
# wheel. The default, torch==2.13.0, is the CPU build on this
# machine's disk (a plain `pip install torch` would pull a multi-GB CUDA build). On a GPU
# machine use e.g. `make gpu-verify TORCH_SPEC=torch` or keep the torch already installed there
# (a device session without network: tools/device/run.sh, see tools/device/README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
LOCK := constraints.txt

.PHONY: test test-slow report report-quick check-report bench bench-scale gpu-verify gpu-check install clean docs pep-cache bench-peers lock

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[test]"
	@touch $(STAMP)

# re-resolve every dependency from PyPI into constraints.txt (then regenerate reports/ with it)
lock:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" tools/lock.sh

install: $(STAMP)

# the tests run with the report's pinned numerical kernels (verify/_numerics.py): the claim plans
# they compare (tests/data/claim_plans.json: step counts a different rounding can move by one at
# a threshold) are then the same on every x86-64 machine
test: $(STAMP)
	$(PY) -m verify._numerics $(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m verify._numerics $(PY) -m pytest -q -m "slow or mutation" --hypothesis-profile=thorough

# The report commands pin the numerical kernels themselves (one thread, AVX2 code paths: see
# docs/architecture.md), so that on any x86-64 machine with the locked versions they rewrite
# reports/ byte for byte. Figure 7's PEPit, cvxpy and Clarabel come with the test extra.
report: $(STAMP)
	$(PY) -m verify run

report-quick: $(STAMP)
	$(PY) -m verify run --quick --out reports/quick

# regenerate the quick report into a temporary folder and compare it with the committed
# reports/quick/ byte for byte (tests/test_reproducible.py does the same inside make test)
check-report: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/test_reproducible.py

.PHONY: check-peers
PEERS_STAMP := $(VENV)/.peers-installed
$(PEERS_STAMP): $(STAMP)
	@echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	@$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -c $(LOCK) -e ".[test,peers]" && touch $(PEERS_STAMP) || \
	  echo "note: the peers extra could not be installed; torchopt/jaxopt will be listed as skipped"

# every library on one thread: same-run ratios on a shared machine
ONE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

bench-peers: $(STAMP) $(PEERS_STAMP)
	$(ONE_THREAD) $(PY) -m pytest -q benchmarks/test_peers.py --benchmark-only -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only -p no:cacheprovider -m "not slow or slow"

# the whole `--scale --jobs 2` run, timed (a quarter of an hour on two cores)
bench-scale: $(STAMP)
	IMAML_BENCH_SCALE=1 $(PY) -m pytest -q benchmarks/test_scale.py --benchmark-only -p no:cacheprovider -k scale_run

# all GPU evidence within BUDGET seconds (GPU_FLAGS=--dry-run: tiny sizes on the CPU)
BUDGET ?= 420
GPU_FLAGS ?=
gpu-verify: $(STAMP)
	$(PY) -m verify gpu --budget $(BUDGET) $(GPU_FLAGS)

# only the few-shot stage of gpu-verify, into reports/gpu
gpu-check: $(STAMP)
	$(PY) -m verify gpu --budget $(BUDGET) --stage fewshot $(GPU_FLAGS)

pep-cache: $(STAMP)
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
	$(PY) tools/mutate.py theory --out .mutation/theory.json
	$(PY) tools/mutate.py solvers --out .mutation/solvers.json
	$(PY) tools/mutate.py verify/checks --out .mutation/checks.json
	$(PY) tools/mutate.py verify/checker --out .mutation/checker.json
