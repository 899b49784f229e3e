#!/usr/bin/env bash
# Set up a virtualenv and run the appliance on its built-in virtual modem line
# with a scripted set of calls; every decision is printed as it is made.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mamoru needs Python 3.11+" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
# stay=1: after the scripted calls the daemon keeps running so they can be seen on the web page.
exec .venv/bin/mamoru run --line "sim:?stay=1" "$@"
