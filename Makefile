# Two commands do all the set-up on a fresh clone:
#   make run    create .venv, install, run the main job (search -> NetAdapt -> export) on the embedded default
#   make test   create .venv, install, lint (ruff), type-check (mypy), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip install -q -c constraints.txt

.PHONY: setup run lint typecheck test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

run: setup
	$(VENV)/bin/mobilenas search

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy  # files and options: [tool.mypy] in pyproject.toml

test: lint typecheck  # two test processes (pytest-xdist): about half the time on 2 cores
	$(PY) -m pytest -q -n 2 --dist worksteal

test-fast: setup
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow"

clean:
	rm -rf $(VENV) runs outputs *.egg-info .ruff_cache .pytest_cache .mypy_cache build
