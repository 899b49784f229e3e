#!/usr/bin/env bash
# Set up a virtualenv from the repo's own files and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mamoru needs Python 3.11+" >&2; exit 2; }
# PortAudio (for sounddevice) is a system library: install Debian's when we can.
if ! ldconfig -p 2>/dev/null | grep -q libportaudio.so && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq libportaudio2 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libportaudio2; }) \
        || echo "warning: could not install libportaudio2; PortAudio tests will be skipped" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
