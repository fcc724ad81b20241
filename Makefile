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

DEMO_STORE := data/demo.zarr
CF := $(VENV)/bin/corrflow

demo: $(STAMP)
	rm -rf $(DEMO_STORE) $(DEMO_STORE).locks
	$(CF) generate u1 --beta 2.0 --shape 16,16 --n 5000 --chains 4 --therm 200 \
	    --observables wilson_2x2,topological_charge --store $(DEMO_STORE)
	$(CF) measure $(DEMO_STORE) u1_16x16_beta2 wilson_3x3 wilson_4x2
	$(CF) info $(DEMO_STORE)
	$(CF) verify $(DEMO_STORE)
	$(CF) summary $(DEMO_STORE) u1_16x16_beta2

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/hmc_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
