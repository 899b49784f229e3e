#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# pi-gen sub-stage, runs on the build host with the target root at ROOTFS_DIR.
# Lays out config/units/udev/journald/watchdog/fstab (layout.sh) and hands the
# mamoru wheel and build flags to 02-run-chroot.sh through /opt/mamoru/dist.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FILES="${HERE}/files"
# shellcheck source=layout.sh
. "${HERE}/layout.sh"

mamoru_install_layout "${ROOTFS_DIR}" "${FILES}"

# Provisioning bundles: the issuing office's public key(s) this image trusts.
# MAMORU_ISSUER_KEY: space-separated issuer.pub.json paths on the build host
# (export it in pi-gen's config); files/issuer-keys/*.json are baked in too (for
# a pi-gen run in docker, where host paths are not visible).
issuer_keys=()
if [ -n "${MAMORU_ISSUER_KEY:-}" ]; then
	read -r -a issuer_keys <<<"${MAMORU_ISSUER_KEY}"
fi
shopt -s nullglob
issuer_keys+=("${FILES}"/issuer-keys/*.json)
shopt -u nullglob
mamoru_install_issuer_keys "${ROOTFS_DIR}" "${issuer_keys[@]}"
if [ "${#issuer_keys[@]}" -eq 0 ]; then
	echo "01-run.sh: no MAMORU_ISSUER_KEY: this image accepts no provisioning bundle" \
		"(a mamoru.toml on the boot partition still works)" >&2
fi

# The package to install: exactly one wheel (preferred) or sdist, put there by
# deploy/image/prepare-stage.sh.
shopt -s nullglob
dists=("${FILES}"/mamoru-*.whl)
if [ "${#dists[@]}" -eq 0 ]; then
	dists=("${FILES}"/mamoru-*.tar.gz)
fi
shopt -u nullglob
if [ "${#dists[@]}" -ne 1 ]; then
	echo "01-run.sh: need exactly one mamoru wheel or sdist in ${FILES}, found ${#dists[@]}" >&2
	echo "           run deploy/image/prepare-stage.sh first" >&2
	exit 1
fi

install -d -m 0755 "${ROOTFS_DIR}/opt/mamoru/dist"
install -m 0644 "${dists[0]}" "${ROOTFS_DIR}/opt/mamoru/dist/"
install -m 0755 "${FILES}/build_pjproject.sh" "${ROOTFS_DIR}/opt/mamoru/dist/build_pjproject.sh"

# Build flags from pi-gen's config file (export them there), for the chroot
# script, which does not reliably inherit the host environment.
cat >"${ROOTFS_DIR}/opt/mamoru/dist/build.env" <<ENV
MAMORU_DIST=/opt/mamoru/dist/$(basename "${dists[0]}")
MAMORU_EXTRAS=${MAMORU_EXTRAS-voice,ja}
MAMORU_BUILD_PJPROJECT=${MAMORU_BUILD_PJPROJECT:-0}
MAMORU_MODEL_LANG=${MAMORU_MODEL_LANG:-ja}
MAMORU_MODEL_AT_BUILD=${MAMORU_MODEL_AT_BUILD:-1}
MAMORU_ISSUER_KEYS=${#issuer_keys[@]}
ENV

# Settings the first-boot script reads on the Pi.
cat >"${ROOTFS_DIR}/etc/mamoru/image.env" <<ENV
# Written by the mamoru image recipe; read by /usr/local/sbin/mamoru-firstboot.
MAMORU_OVERLAY=${MAMORU_OVERLAY:-1}
MAMORU_MODEL_LANG=${MAMORU_MODEL_LANG:-ja}
MAMORU_DATA_LABEL=${MAMORU_DATA_LABEL}
ENV
chmod 0644 "${ROOTFS_DIR}/etc/mamoru/image.env"
