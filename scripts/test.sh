#!/usr/bin/env bash
# Set up a virtualenv from the repo's own files and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mamoru needs Python 3.11+" >&2; exit 2; }
# System tools some tests use: PortAudio (sounddevice), shellcheck (the image recipe), sipp
# (the SIP scenarios), e2fsprogs (the power-cut test, as root), and Chromium with Japanese fonts
# (the web page's browser tests and screenshots).
# Install Debian's packages when we can; without them the PortAudio and shellcheck tests skip
# and say why; the browser and SIPp tests fail saying how to install Chromium or sip-tester.
missing=()
ldconfig -p 2>/dev/null | grep -q libportaudio.so || missing+=(libportaudio2)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v sipp >/dev/null || missing+=(sip-tester)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing+=(fonts-noto-cjk)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)  # the power-cut test's loop-mounted ext4
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }) \
        || echo "warning: could not install ${missing[*]}; the tests that need them will skip or fail saying why" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
