# Two targets for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create and fill .venv themselves (CPU PyTorch from `pip install torch==2.13.0`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stylert-installed
DEMO   := out/demo

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stylert export generator --random-init --seed 0 --resolution 256 --with-mapping --output $(DEMO)/generator.onnx
	$(BIN)/stylert generate $(DEMO)/generator.onnx --seeds 0-3 --truncation 0.7 --output $(DEMO)
	$(BIN)/python benchmarks/generator_latency.py $(DEMO)/generator.onnx --iters 20 --json $(DEMO)/latency.json

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf out .pytest_cache
