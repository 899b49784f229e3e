#!/bin/bash
# Build pjproject and its pjsua2 Python binding (SWIG) from a pinned, verified
# release and install the binding into a virtualenv. pjsua2 has no aarch64
# wheel, so on the Raspberry Pi this is the only way to get the `sip` back-end.
#
#   scripts/build_pjproject.sh /opt/mamoru/venv
#
# Runs on the Pi (or in the pi-gen chroot with MAMORU_BUILD_PJPROJECT=1), as
# root: installs build dependencies with apt-get and the pjproject shared
# libraries under PJ_PREFIX (default /usr/local), then runs ldconfig.
# Takes roughly 20-40 minutes on a Pi 4; much longer under qemu.
#
# Environment:
#   PJ_WORKDIR   where to download and build (default: a fresh mktemp -d, removed after)
#   PJ_PREFIX    install prefix of the C libraries (default /usr/local)
#   PJ_NO_APT=1  do not apt-get install the build dependencies
set -euo pipefail

# --- pinned release --------------------------------------------------------
# To upgrade: change all three together and re-check the hash from a second
# source (the checksum below matches Homebrew's pjproject 2.16 formula).
PJ_VERSION="2.16"
PJ_URL="https://github.com/pjsip/pjproject/archive/refs/tags/${PJ_VERSION}.tar.gz"
PJ_SHA256="3af2e481d51aaa095897820fa2ee26c30e530590c6ca56d23e4133bbdad369eb"

BUILD_DEPS=(build-essential pkg-config swig python3-dev libssl-dev uuid-dev curl ca-certificates)

if [ "$#" -ne 1 ]; then
	echo "usage: $0 VENV   (e.g. /opt/mamoru/venv)" >&2
	exit 2
fi
VENV=$1
PY="${VENV}/bin/python"
if [ ! -x "${PY}" ]; then
	echo "build_pjproject: ${PY} not found: create the venv first (python3 -m venv ${VENV})" >&2
	exit 2
fi
PJ_PREFIX=${PJ_PREFIX:-/usr/local}

log() { echo "build_pjproject: $*" >&2; }

# --- build dependencies ------------------------------------------------------
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
	dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
done
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "${PJ_NO_APT:-0}" = "1" ] || [ "$(id -u)" != "0" ]; then
		log "missing build dependencies: ${missing[*]} (apt-get install them, or run as root)"
		exit 1
	fi
	log "installing build dependencies: ${missing[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# --- download and verify -----------------------------------------------------
if [ -n "${PJ_WORKDIR:-}" ]; then
	WORK=${PJ_WORKDIR}
	mkdir -p "${WORK}"
else
	WORK=$(mktemp -d)
	trap 'rm -rf "${WORK}"' EXIT
fi
TARBALL="${WORK}/pjproject-${PJ_VERSION}.tar.gz"
if [ ! -f "${TARBALL}" ]; then
	log "downloading ${PJ_URL}"
	curl -fsSL --retry 3 -o "${TARBALL}.part" "${PJ_URL}"
	mv "${TARBALL}.part" "${TARBALL}"
fi
log "verifying sha256"
if ! echo "${PJ_SHA256}  ${TARBALL}" | sha256sum -c --quiet -; then
	log "CHECKSUM MISMATCH for ${TARBALL}: refusing to build (delete it to re-download)"
	exit 1
fi

SRC="${WORK}/pjproject-${PJ_VERSION}"
rm -rf "${SRC}"
tar -xzf "${TARBALL}" -C "${WORK}"
cd "${SRC}"

# --- configure and build the C libraries ------------------------------------
# No video, no sound device: mamoru feeds audio through pjsua2's null device
# and its own media ports.
# PJ_IOQUEUE_MAX_HANDLES: every INVITE opens an RTP and an RTCP socket whose ioqueue slot is
# reused 0.5 s after it closes; the default 64 run out under an INVITE flood (~100/s), and a
# build with assertions on aborts there. NDEBUG turns such asserts into error returns.
# PJSUA_MAX_CALLS: the slots' caller and household legs, refused INVITEs and calls waiting for an
# ACK that never comes all take one; pjsua silently caps [sip] max_calls' need at it (the x86_64
# wheel has 4).
cat >pjlib/include/pj/config_site.h <<'CFG'
/* mamoru: audio-only SIP endpoint, no sound card */
#define PJMEDIA_HAS_VIDEO 0
#define PJ_IOQUEUE_MAX_HANDLES 1024
#define PJSUA_MAX_CALLS 32
CFG
./configure --prefix="${PJ_PREFIX}" --enable-shared --disable-video --disable-sound \
	--disable-libyuv --disable-libwebrtc --disable-v4l2 --disable-openh264 \
	CFLAGS="-O2 -fPIC -DNDEBUG" CXXFLAGS="-O2 -fPIC -DNDEBUG"
# Serial on purpose: pjproject's parallel build races creating object
# directories. (Set MAKEFLAGS=-jN at your own risk.)
make dep
make
make install
ldconfig

# --- SWIG Python binding into the venv ---------------------------------------
"${PY}" -m pip install --no-cache-dir --upgrade setuptools wheel
cd pjsip-apps/src/swig/python
make PYTHON_EXE="${PY}"
"${PY}" -m pip install --no-cache-dir --no-build-isolation .
cd /
"${PY}" -c 'import pjsua2; print("pjsua2 imported from", pjsua2.__file__)' \
	|| { log "pjsua2 does not import from ${VENV}"; exit 1; }
log "pjsua2 ${PJ_VERSION} installed into ${VENV}"
