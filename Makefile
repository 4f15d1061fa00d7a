# Two commands do everything on a fresh machine:
#   make test   — create .venv, install the locked environment, run the test suite
#   make demo   — create .venv, make the synthetic sample corpus, extract, train, print CCC
#   make lock   — refresh requirements.lock from pyproject.toml (tools/lock.sh; needs the registry)
# Both install requirements.lock (every package pinned with hashes), never what the index serves today.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
AVPIPE  = $(VENV)/bin/avpipe
DEMO   ?= sample

.PHONY: venv test demo lock clean-venv

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m avpipe.demo --dir $(DEMO)

lock:
	tools/lock.sh

clean-venv:
	rm -rf $(VENV)
