# Two commands do everything on a fresh machine:
#   make test   — create .venv, install avpipe with its dev extras, run the test suite
#   make demo   — create .venv, make the synthetic sample corpus, extract, train, print CCC
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
AVPIPE  = $(VENV)/bin/avpipe
DEMO   ?= sample

.PHONY: venv test demo clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m avpipe.demo --dir $(DEMO)

clean-venv:
	rm -rf $(VENV)
