#!/usr/bin/env bash
# Run every check of crio-py: ruff, stub currency, import layering, unit and end-to-end tests.
# Run as root on Debian: it installs what the tests need (packages and a .venv in the checkout).
#   sudo ./run-tests.sh                 everything
#   sudo ./run-tests.sh tests/unit -k x extra pytest arguments replace the default selection
set -euo pipefail
cd "$(dirname "$0")"
. hack/common.sh
need_root

apt_install "${RUNTIME_DEBS[@]}" "${TEST_DEBS[@]}" "${PLAYGROUND_TEST_DEBS[@]}"
make_venv .venv -e ".[dev]"
PY=.venv/bin/python

echo "== ruff"
.venv/bin/ruff check .
echo "== CRI stubs are current"
$PY -m crio_py.cri.generate --check
echo "== import layering"
.venv/bin/lint-imports
echo "== pytest"
if [ $# -eq 0 ]; then set -- tests; fi
exec $PY -m pytest -p no:cacheprovider "$@"
