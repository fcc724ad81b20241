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
	rm -rf $(DEMO_STORE) data/demo_flow
	$(CF) generate u1 --beta 2.0 --shape 16,16 --n 2000 --chains 4 --thin 2 \
	    --observables wilson_2x2,topological_charge --store $(DEMO_STORE)
	$(CF) generate u1 --beta 2.2 --shape 16,16 --n 2000 --chains 4 --thin 2 --seed 1 \
	    --observables wilson_2x2,topological_charge --store $(DEMO_STORE)
	$(CF) summary $(DEMO_STORE) u1_16x16_beta2
	$(CF) train --store $(DEMO_STORE) --from u1_16x16_beta2 --to beta=2.2 --out data/demo_flow --epochs 20 --n-train 256
	$(CF) correlate --store $(DEMO_STORE) --from u1_16x16_beta2 --flow data/demo_flow --name flowed_beta2.2 --batch 200
	$(CF) correlate --store $(DEMO_STORE) --from u1_16x16_beta2 --identity --to beta=2.2 --name direct_beta2.2 --batch 200
	$(CF) info $(DEMO_STORE)
	$(CF) compare --store $(DEMO_STORE) --base u1_16x16_beta2 flowed_beta2.2 direct_beta2.2 u1_16x16_beta2.2 \
	    --obs plaquette --obs wilson_2x2
	$(CF) report --store $(DEMO_STORE) --base u1_16x16_beta2 flowed_beta2.2 direct_beta2.2 u1_16x16_beta2.2 \
	    --obs plaquette --obs wilson_2x2 --out reports/demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/hmc_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
