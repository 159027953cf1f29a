PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs chromium bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cli,docs,web]'
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

test: lint typecheck docs chromium
	$(PY) -m pytest -q

# The documentation site (docs/, mkdocs.yml): warnings are errors; nothing is fetched.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site

# The browser tests drive Debian's chromium (never `playwright install`): installed here when it
# is missing and we are root; otherwise those tests skip and say what is missing.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) .demo .site
