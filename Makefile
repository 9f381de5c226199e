# make run: serve the bundled model at http://127.0.0.1:5000   make test: run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000
DATA   ?= ../shared/data/cifar10-jpeg.tar.gz

.PHONY: run serve test test-fast test-venv notebook explore train train-baseline venv beam-venv clean

venv: $(BIN)/.installed        ## what the app and training need
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@# cifarlab, app and train importable from anywhere; setuptools' banner kept in a log, shown only on failure
	$(BIN)/pip install --quiet --no-deps -e . > $(VENV)/install-e.log 2>&1 || (cat $(VENV)/install-e.log; false)
	touch $@

test-venv: $(BIN)/.installed-test   ## ... plus the test tools (pytest, selenium, schemathesis, hypothesis, nbclient)
$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

beam-venv: .venv-beam/.installed   ## the Apache Beam pipeline's own venv (Beam's pins and TensorFlow's do not fit together)
.venv-beam/.installed: requirements-beam.txt pyproject.toml
	$(PYTHON) -m venv .venv-beam
	.venv-beam/bin/pip install --quiet --upgrade pip
	.venv-beam/bin/pip install --quiet -r requirements-beam.txt
	.venv-beam/bin/pip install --quiet --no-deps -e .
	touch $@

run: venv           ## one process: Grad-CAM prepared at start-up, so the first explanation does not wait
	GRADCAM_PRELOAD=$${GRADCAM_PRELOAD:-true} $(BIN)/python app.py --host $(HOST) --port $(PORT)

serve: venv         ## production stack: nginx (deploy/nginx.conf) in front of gunicorn, on BIND (default 127.0.0.1:8000)
	$(BIN)/python -m cifarlab.web.serve

test: test-venv
	$(BIN)/python -m pytest -q

# everything but the tests marked slow (multi-process, notebook, browser, full stack, resume), on one process per
# core (pytest-xdist, at most 4): most of these tests wait on sockets, subprocesses and disk, not on a core
test-fast: test-venv
	$(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses 4

NOTEBOOK_PORT ?= 8888
# root (containers, CI) needs --allow-root; a machine without a display gets no browser, just the URL to open
NOTEBOOK_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root) $(if $(DISPLAY)$(WAYLAND_DISPLAY),,--no-browser)

notebook: test-venv  ## JupyterLab on notebooks/explore.ipynb (installs requirements-dev.txt once)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@echo "JupyterLab on notebooks/explore.ipynb: open the http://$(HOST):$(NOTEBOOK_PORT)/lab?token=... URL it prints below"
	$(BIN)/jupyter lab notebooks/explore.ipynb --ip $(HOST) --port $(NOTEBOOK_PORT) $(NOTEBOOK_FLAGS)

explore: test-venv   ## the notebook run headless, saved with its outputs as runs/explore.ipynb (SUBSET=500: quick)
	$(BIN)/python tools/run_notebook.py --data $(DATA) $(if $(SUBSET),--subset $(SUBSET))

train: venv          ## the flagship recipe on the shared JPEG copy
	$(BIN)/python train.py --data $(DATA) --arch fast --out runs/fast

train-baseline: venv
	$(BIN)/python train.py --data $(DATA) --arch baseline --out runs/baseline

clean:
	rm -rf $(VENV) .venv-beam .pytest_cache
