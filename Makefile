# Two targets for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create and fill .venv themselves (CPU PyTorch from `pip install torch==2.13.0`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stylert-installed
DEMO   := out/demo

.PHONY: demo test venv kernels clean

venv: $(STAMP)

# tensorrt-stubs types the TensorRT modules for mypy; --no-deps because it requires NVIDIA's
# download-only placeholder.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,test,openvino,serve]'
	$(BIN)/pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DEMO)
	$(BIN)/python -c "import skimage.data; from PIL import Image; Image.fromarray(skimage.data.astronaut()).save('$(DEMO)/astronaut.png')"
	$(BIN)/stylert export retouch --random-init --seed 0 --resolution 256 --with-masks --output $(DEMO)/retouch256.onnx
	$(BIN)/stylert retouch $(DEMO)/astronaut.png --model $(DEMO)/retouch256.onnx --masks --output $(DEMO)/retouched
	$(BIN)/python benchmarks/latency.py $(DEMO)/retouch256.onnx --pipeline $(DEMO)/astronaut.png --iters 10 --json $(DEMO)/latency.json

# TensorRT headers for the plugins: TRT_INCLUDE=/usr/include/x86_64-linux-gnu (a TensorRT install) or
# the include/ folder of the NVIDIA/TensorRT repository; by default the TensorRT 11.1 headers in
# ../shared/third_party/tensorrt, where they exist. Without headers the plugin test skips and says why.
TRT_INCLUDE ?= $(abspath $(wildcard ../shared/third_party/tensorrt/include))

# The CUDA kernels, their CPU reference and the TensorRT plugins (kernels/Makefile says what it built
# for which GPU architectures, against which TensorRT headers).
kernels:
	$(MAKE) -C kernels TRT_INCLUDE=$(TRT_INCLUDE)

test: $(STAMP) kernels
	TRT_INCLUDE=$(TRT_INCLUDE) $(BIN)/python -m pytest -q tests

clean:
	rm -rf out .pytest_cache
	$(MAKE) -C kernels clean
