# `make run` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly: 2.13.0 resolves to the local CPU wheel.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[onnx,executorch,litert,federated,simulation,test]'
	# mlgauge's C++ operators, compiled once here so no run waits for the compiler.
	$(PY) -m mlgauge.ops || echo "the fused ops will use element-wise PyTorch (see above)"
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mlgauge run

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q --durations=20

bench: $(STAMP)
	$(PY) benchmarks/harness_overhead.py
	$(PY) benchmarks/backend_efficiency.py
	$(PY) benchmarks/training_overhead.py
	$(PY) benchmarks/tiny_protocol_overhead.py
	$(PY) benchmarks/focal_loss.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
