#!/usr/bin/env bash
# Create the virtualenv and install Frontdoor with its test extras, unless that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import django, celery, honcho, gunicorn, uvicorn, redis, psycopg" 2>/dev/null; then
  echo "setup: installing dependencies (pip install -e '.[test]')"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
fi
