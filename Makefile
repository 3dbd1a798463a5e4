# make demo  — the bundled sample pipeline (CPU when there is no GPU); writes results/
# make test  — the test suite (napari tests under Xvfb when xvfb-run exists; without a display they are skipped, with the reason)
# make bench — the benchmarks (slow; see README)
# make docs  — the documentation site (every tutorial executed) → docs/_build/html
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "Installing PyTorch (the largest download; a few minutes on a slow connection) ..."
	$(PY) -m pip install --progress-bar on torch==2.13.0
	@echo "Installing scnapse with scanpy, napari and the test tools ..."
	$(PY) -m pip install --progress-bar on -e ".[test,napari]"
	@echo "Installed into $(VENV)/ (run it as $(VENV)/bin/scnapse, or $(VENV)/bin/python)."
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scnapse demo --output-dir results

test: $(STAMP)
	@if command -v xvfb-run >/dev/null 2>&1; then \
	  xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest -q; \
	else \
	  if [ -z "$$DISPLAY" ]; then echo "No display and no xvfb-run: the napari tests are skipped (install xvfb to run them)."; fi; \
	  $(PY) -m pytest -q; \
	fi

bench: $(STAMP)
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) benchmarks/embedding.py

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	SCNAPSE_DOCS_EXECUTE=force $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) results .pytest_cache docs/_build docs/api/generated
