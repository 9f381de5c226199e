# make run: serve the bundled model at http://127.0.0.1:5000   make test: run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000
DATA   ?= ../shared/data/cifar10-jpeg.tar.gz

.PHONY: run serve test train train-baseline venv clean

venv: $(BIN)/.installed
$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

run: venv
	$(BIN)/python app.py --host $(HOST) --port $(PORT)

serve: venv         ## production stack: nginx (deploy/nginx.conf) in front of gunicorn, on BIND (default 127.0.0.1:8000)
	$(BIN)/python -m cifarlab.serve

test: venv
	$(BIN)/python -m pytest -q

train: venv          ## the flagship recipe on the shared JPEG copy
	$(BIN)/python train.py --data $(DATA) --arch fast --out model/cifar10_cnn

train-baseline: venv
	$(BIN)/python train.py --data $(DATA) --arch baseline --out model/baseline

clean:
	rm -rf $(VENV) .pytest_cache
