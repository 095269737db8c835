# Two targets for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create and fill .venv themselves (CPU PyTorch from `pip install torch==2.13.0`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stylert-installed
DEMO   := out/demo

.PHONY: demo test venv kernels docs plots clean check-headers

venv: $(STAMP)

# tensorrt-stubs types the TensorRT modules for mypy; --no-deps because it requires NVIDIA's
# download-only placeholder.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,test,openvino,serve,mobile]'
	$(BIN)/pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python benchmarks/demo.py --out $(DEMO)

# TensorRT headers for the plugins: TRT_INCLUDE=/usr/include/x86_64-linux-gnu (a TensorRT install) or
# the include/ folder of the NVIDIA/TensorRT repository; by default the TensorRT 11.1 headers in
# ../shared/third_party/tensorrt, where they exist. Without headers the plugin test skips and names the path it looked
# for, except under CI, where `check-headers` fails the run.
SHARED_TRT  := $(abspath ../shared/third_party/tensorrt)
TRT_INCLUDE ?= $(abspath $(wildcard $(SHARED_TRT)/include))
TRT11_SRC   := $(SHARED_TRT)/python/src

# The CUDA kernels, their CPU reference and the TensorRT plugins (kernels/Makefile says what it built
# for which GPU architectures, against which TensorRT headers).
kernels:
	$(MAKE) -j2 -C kernels TRT_INCLUDE=$(TRT_INCLUDE)

# Two pytest-xdist workers (the machines this runs on have 2 cores), a test file per worker at a time (so the
# Ray tests share one service and one Ray); each export happens once per session (tests/conftest.py `built`).
test: $(STAMP) check-headers kernels docs
	TRT_INCLUDE=$(TRT_INCLUDE) $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

# What the TensorRT checks need and the README says is checked: TensorRT's headers (NvInferRuntime.h, for the plugin
# build and host check of tests/test_kernels.py) and TensorRT 11's binding sources (the API check of
# tests/test_tensorrt.py). Under CI (CI=true, as .ci/run sets) a missing one fails here, named; elsewhere those
# tests skip, naming the path they looked for.
check-headers:
	@missing=""; \
	{ [ -n "$(TRT_INCLUDE)" ] && [ -f "$(TRT_INCLUDE)/NvInferRuntime.h" ]; } || \
		missing="$$missing $(or $(TRT_INCLUDE),$(SHARED_TRT)/include)/NvInferRuntime.h"; \
	[ -d "$(TRT11_SRC)" ] || missing="$$missing $(TRT11_SRC)/"; \
	if [ -n "$$missing" ]; then \
		if [ "$$CI" = "true" ]; then \
			echo "error: CI checks the TensorRT plugins and API, but these are missing:$$missing" \
			     "(lay shared/third_party/tensorrt beside the checkout, or set TRT_INCLUDE=/path/to/TensorRT/include)" >&2; \
			exit 1; \
		fi; \
		echo "note: missing$$missing: the TensorRT plugin and API checks will skip (CI=true makes this an error)"; \
	fi

# The documentation site (MkDocs, Material theme, mkdocstrings); --strict: a broken link or reference fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet -f docs/mkdocs.yml -d $(abspath out/site)

# The documentation's benchmark plots from benchmarks/results (no measuring).
plots: $(STAMP)
	$(BIN)/python benchmarks/plots.py

clean:
	rm -rf out .pytest_cache
	$(MAKE) -C kernels clean
