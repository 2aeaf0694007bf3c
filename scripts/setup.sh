#!/usr/bin/env bash
# Set-up for both README commands, idempotent: system packages, .venv, the data check.
#   scripts/setup.sh          what `make reproduce` needs
#   scripts/setup.sh --test   plus what `make test` needs (Chromium, node's playwright-core)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0; [ "${1:-}" = "--test" ] && want_test=1
PYTHON=${PYTHON:-python3}

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || [ -n "${DIFFNB_DATA_DIR:-}" ] || need_apt+=(dataset-fashion-mnist)
[ $want_test = 1 ] && ! command -v chromium >/dev/null && need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: not installing ${need_apt[*]} (needs apt-get as root); Fashion-MNIST falls back" \
         "to \$DIFFNB_DATA_DIR or torchvision's download, the browser test is skipped" >&2
  fi
fi

stamp=.venv/.installed
if [ ! -f $stamp ] || [ requirements.txt -nt $stamp ] || [ pyproject.toml -nt $stamp ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "setup: pip install -r requirements.txt into .venv"
  # --no-compile: no .pyc for all of torch's files at install (about 90 s on 2 cores); Python
  # compiles the modules a run imports, once, on first import.
  .venv/bin/python -m pip install -q --no-compile -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  touch $stamp
fi

if [ $want_test = 1 ] && command -v npm >/dev/null; then
  if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
    echo "setup: npm ci (playwright-core for the browser test)"
    npm ci --silent --no-audit --no-fund && touch node_modules/.installed
  fi
fi

.venv/bin/python -m diffnb.data
