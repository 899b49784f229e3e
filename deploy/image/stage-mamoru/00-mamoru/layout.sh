#!/bin/bash
# The mamoru layer's file layout, shared by the pi-gen stage (01-run.sh) and
# deploy/image/build-staging.sh so both put every file in the same place.
# Sourced, not run. Needs nothing but coreutils: no chroot, no root.
#
#   mamoru_install_layout ROOT SRC
#
# ROOT  the target root filesystem (pi-gen's ROOTFS_DIR, or a staging dir)
# SRC   a directory holding the inputs under these names:
#         mamoru.toml                 -> /etc/mamoru/mamoru.toml
#         mamoru.service              -> /etc/systemd/system/mamoru.service
#         99-mamoru-modem.rules       -> /etc/udev/rules.d/99-mamoru-modem.rules
#         journald-mamoru.conf        -> /etc/systemd/journald.conf.d/mamoru.conf
#         mamoru-firstboot.service    -> /etc/systemd/system/mamoru-firstboot.service
#         mamoru-firstboot.sh         -> /usr/local/sbin/mamoru-firstboot
set -euo pipefail

# Label of the writable data partition, mounted at /var/lib/mamoru.
MAMORU_DATA_LABEL=${MAMORU_DATA_LABEL:-mamoru-data}
MAMORU_FSTAB_LINE="LABEL=${MAMORU_DATA_LABEL}  /var/lib/mamoru  ext4  defaults,noatime,commit=60,nofail,x-systemd.device-timeout=15s  0  2"

# Copy the inputs from a mamoru source tree into SRC (the stage's files/ dir
# or a scratch dir). Fails, naming the file, if the repo lacks one.
#   mamoru_collect_inputs REPO SRC
mamoru_collect_inputs() {
	local repo=$1 dest=$2 stage_files
	stage_files="${repo}/deploy/image/stage-mamoru/00-mamoru/files"
	mkdir -p "${dest}"
	install -m 0644 "${repo}/deploy/mamoru.example.toml" "${dest}/mamoru.toml"
	install -m 0644 "${repo}/deploy/systemd/mamoru.service" "${dest}/mamoru.service"
	install -m 0644 "${repo}/deploy/udev/99-mamoru-modem.rules" "${dest}/99-mamoru-modem.rules"
	install -m 0644 "${repo}/deploy/journald/mamoru.conf" "${dest}/journald-mamoru.conf"
	install -m 0755 "${repo}/scripts/build_pjproject.sh" "${dest}/build_pjproject.sh"
	if [ "$(cd "${stage_files}" && pwd -P)" != "$(cd "${dest}" && pwd -P)" ]; then
		install -m 0644 "${stage_files}/mamoru-firstboot.service" "${dest}/mamoru-firstboot.service"
		install -m 0755 "${stage_files}/mamoru-firstboot.sh" "${dest}/mamoru-firstboot.sh"
	fi
}

mamoru_require_inputs() {
	local src=$1 missing=0 f
	for f in mamoru.toml mamoru.service 99-mamoru-modem.rules journald-mamoru.conf \
		mamoru-firstboot.service mamoru-firstboot.sh; do
		if [ ! -f "${src}/${f}" ]; then
			echo "mamoru layout: missing input ${src}/${f}" >&2
			missing=1
		fi
	done
	return "${missing}"
}

# config.txt of the boot partition: Bookworm and later mount it at
# /boot/firmware, older releases at /boot.
mamoru_config_txt() {
	local root=$1
	if [ -f "${root}/boot/firmware/config.txt" ] || [ ! -f "${root}/boot/config.txt" ]; then
		echo "${root}/boot/firmware/config.txt"
	else
		echo "${root}/boot/config.txt"
	fi
}

mamoru_install_layout() {
	local root=$1 src=$2 cfg
	mamoru_require_inputs "${src}"

	# Configuration (holds alert tokens: not world-readable; group set in the chroot).
	install -d -m 0755 "${root}/etc/mamoru"
	install -m 0640 "${src}/mamoru.toml" "${root}/etc/mamoru/mamoru.toml"

	# systemd units, udev rule, journald drop-in.
	install -d -m 0755 "${root}/etc/systemd/system" "${root}/etc/udev/rules.d" \
		"${root}/etc/systemd/journald.conf.d" "${root}/etc/systemd/system.conf.d" \
		"${root}/usr/local/sbin"
	install -m 0644 "${src}/mamoru.service" "${root}/etc/systemd/system/mamoru.service"
	install -m 0644 "${src}/mamoru-firstboot.service" "${root}/etc/systemd/system/mamoru-firstboot.service"
	install -m 0755 "${src}/mamoru-firstboot.sh" "${root}/usr/local/sbin/mamoru-firstboot"
	install -m 0644 "${src}/99-mamoru-modem.rules" "${root}/etc/udev/rules.d/99-mamoru-modem.rules"
	install -m 0644 "${src}/journald-mamoru.conf" "${root}/etc/systemd/journald.conf.d/mamoru.conf"

	# Hardware watchdog: systemd (PID 1) pets /dev/watchdog; if the whole
	# system hangs for 15 s the SoC resets. mamoru.service's own WatchdogSec
	# covers a hung daemon; this covers a hung kernel/PID 1.
	cat >"${root}/etc/systemd/system.conf.d/mamoru-watchdog.conf" <<'WD'
# Installed by the mamoru image recipe.
[Manager]
RuntimeWatchdogSec=15
RebootWatchdogSec=2min
WD

	# Enable the BCM2835 watchdog device in the firmware config.
	cfg=$(mamoru_config_txt "${root}")
	install -d -m 0755 "$(dirname "${cfg}")"
	touch "${cfg}"
	if ! grep -q '^dtparam=watchdog=on' "${cfg}"; then
		printf '\n# mamoru: hardware watchdog\ndtparam=watchdog=on\n' >>"${cfg}"
	fi

	# Writable data partition at /var/lib/mamoru (the root becomes a read-only
	# overlay at first boot). nofail: a missing partition must not stop boot;
	# mamoru-firstboot and the health alert report it instead.
	install -d -m 0750 "${root}/var/lib/mamoru"
	touch "${root}/etc/fstab"
	if ! grep -q '[[:space:]]/var/lib/mamoru[[:space:]]' "${root}/etc/fstab"; then
		echo "${MAMORU_FSTAB_LINE}" >>"${root}/etc/fstab"
	fi

	# Where the build leaves a seed copy of the speech model (see 02-run-chroot.sh).
	install -d -m 0755 "${root}/opt/mamoru"

	# Issuer public keys that provisioning bundles must be signed with
	# (mamoru_install_issuer_keys); empty = this image accepts no bundle.
	install -d -m 0755 "${root}/etc/mamoru/issuer-keys"
}

# Trust provisioning bundles signed by these issuers (docs/provisioning.md):
# each KEYFILE is an issuer.pub.json from `mamoru provision keygen`. Baked into
# the image, never read from the config: a bundle replaces the config.
#   mamoru_install_issuer_keys ROOT KEYFILE...
mamoru_install_issuer_keys() {
	local root=$1 key digest
	shift
	install -d -m 0755 "${root}/etc/mamoru/issuer-keys"
	for key in "$@"; do
		if [ ! -f "${key}" ]; then
			echo "mamoru layout: issuer key ${key} not found" >&2
			return 1
		fi
		if grep -q 'PRIVATE KEY' "${key}"; then
			echo "mamoru layout: ${key} is a PRIVATE key; bake the public issuer.pub.json, keep issuer.key offline" >&2
			return 1
		fi
		if ! grep -q '"keyval"' "${key}" || ! grep -q '"ed25519"' "${key}"; then
			echo "mamoru layout: ${key} is not an issuer public key (issuer.pub.json from 'mamoru provision keygen')" >&2
			return 1
		fi
		# Named by content: several offices' issuer.pub.json never overwrite each other.
		digest=$(sha256sum "${key}" | cut -c1-16)
		install -m 0644 "${key}" "${root}/etc/mamoru/issuer-keys/issuer-${digest}.pub.json"
	done
}
