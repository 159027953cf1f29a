PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cli,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py
	$(PY) examples/approval.py --demo
	$(PY) examples/tutorial.py

lint: $(STAMP)
	$(VENV)/bin/ruff check graphexec tests examples benches
	$(VENV)/bin/ruff format --check graphexec tests examples benches

typecheck: $(STAMP)
	$(VENV)/bin/mypy
	@# pyproject.toml leaves the subfolders' conftest.py files out (all are named "conftest")
	for f in $$(find tests -mindepth 2 -name conftest.py); do $(VENV)/bin/mypy "$$f" || exit 1; done

test: lint typecheck docs
	$(PY) -m pytest -q

# The documentation site (docs/, mkdocs.yml): warnings are errors; nothing is fetched.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) .demo .site
