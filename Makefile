# Set-up and entry points. `make test` and `make demo` create .venv when it is
# missing and install the pinned dependencies from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo zoo clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(PY) tools/demo.py

zoo: $(STAMP)
	$(PY) tools/model_stats.py --cfg configs/kinetics

clean:
	rm -rf $(VENV) output
