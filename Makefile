# Two entry points for a fresh machine with Python >= 3.11 and pip:
#   make demo   -- create .venv, install corrflow, run the end-to-end demo
#   make test   -- create .venv, install corrflow with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.corrflow-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/u1_demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/hmc_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
