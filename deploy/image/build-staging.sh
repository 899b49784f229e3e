#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# Build the mamoru layer into a plain staging directory, laid out exactly as
# the pi-gen stage lays it out in the image, so CI can inspect and run it
# without pi-gen, a chroot, qemu or root:
#
#   deploy/image/build-staging.sh ROOTDIR
#   MAMORU_WHEELHOUSE=DIR deploy/image/build-staging.sh ROOTDIR   # offline, from DIR's wheels
#
# ROOTDIR/opt/mamoru/venv                       python3 -m venv + mamoru (core, no extras)
# ROOTDIR/etc/mamoru/mamoru.toml                from deploy/mamoru.example.toml
# ROOTDIR/etc/systemd/system/mamoru.service     deploy/systemd/mamoru.service
# ROOTDIR/etc/systemd/system/mamoru-firstboot.service, /usr/local/sbin/mamoru-firstboot
# ROOTDIR/etc/udev/rules.d/99-mamoru-modem.rules
# ROOTDIR/etc/systemd/journald.conf.d/mamoru.conf
# ROOTDIR/etc/systemd/system.conf.d/mamoru-watchdog.conf
# ROOTDIR/boot/firmware/config.txt              dtparam=watchdog=on only
# ROOTDIR/etc/fstab                             the /var/lib/mamoru data partition line only
#
# Differences from the image, by necessity:
#  - the mamoru user/group is NOT created (needs root and the target's
#    passwd); files stay owned by whoever runs this
#  - units are NOT enabled (no systemctl against a foreign root)
#  - the venv's scripts point at ROOTDIR/opt/mamoru/venv, not /opt/mamoru/venv
#    (a venv is not relocatable), and it is built with this host's python3
#  - no voice/sip extras, no pjproject, no speech model, no overlayfs
set -euo pipefail

if [ "$#" -ne 1 ]; then
	echo "usage: $0 ROOTDIR" >&2
	exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${MAMORU_REPO:-$(cd "${HERE}/../.." && pwd)}
PYTHON=${PYTHON:-python3}
mkdir -p "$1"
ROOT=$(cd "$1" && pwd)

# shellcheck source=stage-mamoru/00-mamoru/layout.sh
. "${HERE}/stage-mamoru/00-mamoru/layout.sh"

inputs=$(mktemp -d)
trap 'rm -rf "${inputs}"' EXIT
mamoru_collect_inputs "${REPO}" "${inputs}"
mamoru_install_layout "${ROOT}" "${inputs}"

VENV="${ROOT}/opt/mamoru/venv"
"${PYTHON}" -m venv "${VENV}"
if [ -n "${MAMORU_WHEELHOUSE:-}" ]; then
	# Offline: every dependency (and the build backend) from these wheels, never the registry.
	"${VENV}/bin/python" -m pip install --quiet --no-cache-dir --no-index --find-links "${MAMORU_WHEELHOUSE}" "${REPO}"
else
	"${VENV}/bin/python" -m pip install --quiet --no-cache-dir "${REPO}"
fi
"${VENV}/bin/mamoru" --help >/dev/null

echo "staging root ready: ${ROOT} (mamoru user not created, units not enabled)"
