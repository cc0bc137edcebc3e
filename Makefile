# Frontdoor developer commands. `make run` starts the whole platform; `make test` installs test needs and runs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,embeddings

.PHONY: run setup test test-deps lint typecheck pytest bench clean

run:
	bash scripts/run.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'

# Debian's chromium for the console's browser tests (Playwright drives it; no browser download), and the test
# OpenID Connect provider's packages (npm `oidc-provider`, for the single sign-on tests; it needs node 20.19+).
# Without node those tests skip, except on CI, where a missing node fails here.
test-deps: setup
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@if command -v node >/dev/null 2>&1; then \
	  cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error; \
	elif [ -n "$$CI" ]; then \
	  echo "node is missing: the single sign-on tests need it (node 20.19+ with npm)" >&2; exit 1; \
	else \
	  echo "node is missing: the single sign-on tests will be skipped"; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check . || echo "(formatting differences are reported, not fatal)"

typecheck: setup
	$(BIN)/mypy .

# Browser tests run in their own pytest process: Playwright's sync API needs DJANGO_ALLOW_ASYNC_UNSAFE,
# which must not leak into the rest of the suite.
pytest: test-deps
	$(BIN)/pytest --ignore=tests/browser $(PYTEST_ARGS)
	$(BIN)/pytest tests/browser $(PYTEST_ARGS)

# The suite runs beside a stand-in for a `make run` installation on the same Redis (scripts/neighbour_check.py):
# the target fails when the suite took, sent, published or deleted anything of the installation's. One shell, so
# that verify runs (and the neighbour stops) whatever pytest answers.
test: test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy .
	$(BIN)/python scripts/neighbour_check.py start || exit 1; \
	status=0; \
	$(BIN)/pytest --ignore=tests/browser $(PYTEST_ARGS) && $(BIN)/pytest tests/browser $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python scripts/neighbour_check.py verify || status=1; \
	exit $$status

bench: setup
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/autoscale.py
	$(BIN)/python bench/batch.py

clean:
	rm -rf $(VENV) var staticfiles .mypy_cache .ruff_cache
