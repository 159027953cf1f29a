PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs chromium bench clean pgbouncer

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cli,docs,postgres,web]'
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

# The Postgres tests run against GRAPHEXEC_TEST_PG (default: the local server) and skip, saying
# so, when no server answers; the PgBouncer ones need Debian's pgbouncer, installed here when
# missing and we are root (else they skip).
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer) \
	      >/dev/null 2>&1; } || echo "pgbouncer not installed: its tests will be skipped"

test: lint typecheck docs pgbouncer chromium
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
