#!/bin/bash
# mamoru first-boot provisioning (installed as /usr/local/sbin/mamoru-firstboot,
# run once by mamoru-firstboot.service before mamoru.service).
#
#  1. mount the writable data partition (LABEL=mamoru-data) at /var/lib/mamoru
#  2. provisioning: a signed bundle (*.mamoru-bundle, docs/provisioning.md) on
#     the boot partition or on a USB stick is verified against the issuer keys
#     baked into the image (/etc/mamoru/issuer-keys) and applied with
#     `mamoru provision apply`; anything not signed by them is refused. Without
#     a bundle, a mamoru.toml on the boot partition is validated with
#     `mamoru config check` and installed as /etc/mamoru/mamoru.toml.
#  3. speech model: copy the build's seed, else `mamoru model install LANG`
#  4. read-only root: `raspi-config nonint do_overlayfs 0`, then reboot
#
# Everything is logged to the journal (journalctl -u mamoru-firstboot) and to
# mamoru-firstboot.log on the boot partition, readable from any PC.
set -euo pipefail

VENV=/opt/mamoru/venv
MAMORU="${VENV}/bin/mamoru"
CONFIG=/etc/mamoru/mamoru.toml
DATA=/var/lib/mamoru
DONE=/etc/mamoru/.firstboot-done
MAMORU_OVERLAY=1
MAMORU_MODEL_LANG=ja
MAMORU_DATA_LABEL=mamoru-data
if [ -f /etc/mamoru/image.env ]; then
	# shellcheck source=/dev/null
	. /etc/mamoru/image.env
fi

BOOT=/boot/firmware
[ -d "${BOOT}" ] || BOOT=/boot
BOOTLOG="${BOOT}/mamoru-firstboot.log"

log() {
	local line
	line="mamoru-firstboot: $*"
	echo "${line}"
	echo "$(date -Is) ${line}" >>"${BOOTLOG}" 2>/dev/null || true
}

errors=0
fail() {
	log "ERROR: $*"
	errors=$((errors + 1))
}

log "starting (image settings: overlay=${MAMORU_OVERLAY} model=${MAMORU_MODEL_LANG} data=LABEL=${MAMORU_DATA_LABEL})"

# --- 1. data partition --------------------------------------------------
data_ok=0
if ! mountpoint -q "${DATA}"; then
	mount "${DATA}" 2>/dev/null || true
fi
if mountpoint -q "${DATA}"; then
	data_ok=1
	chown mamoru:mamoru "${DATA}"
	chmod 0750 "${DATA}"
	log "data partition mounted at ${DATA} ($(findmnt -no SOURCE,OPTIONS "${DATA}"))"
else
	fail "no partition labelled ${MAMORU_DATA_LABEL}: ${DATA} is on the root filesystem." \
		"Add one (deploy/image/add-data-partition.sh, see docs/appliance.md)." \
		"The read-only root is NOT enabled, or the call log would vanish at every reboot."
fi

# --- 2. provisioning ----------------------------------------------------
# USB sticks: partitions of USB disks not mounted yet (the system's own disk,
# when it boots from USB, is), read-only and without exec, for the bundle only.
USB_MOUNTS=/run/mamoru-usb
usb_mounts=()
unmount_usb() {
	local m
	for m in "${usb_mounts[@]}"; do
		umount "${m}" 2>/dev/null || log "could not unmount ${m}"
	done
}
trap unmount_usb EXIT
mount_usb_sticks() {
	local disk tran part fstype n=0
	while read -r disk tran; do
		[ "${tran}" = "usb" ] || continue
		while read -r part; do
			if findmnt -rn -S "${part}" >/dev/null 2>&1; then
				continue
			fi
			fstype=$(blkid -o value -s TYPE "${part}" 2>/dev/null || true)
			case "${fstype}" in
			vfat | exfat | ext2 | ext3 | ext4 | ntfs | ntfs3 | iso9660) ;;
			*) continue ;;
			esac
			n=$((n + 1))
			mkdir -p "${USB_MOUNTS}/${n}"
			if timeout 30 mount -o ro,nosuid,nodev,noexec "${part}" "${USB_MOUNTS}/${n}"; then
				usb_mounts+=("${USB_MOUNTS}/${n}")
				log "USB stick ${part} (${fstype}) mounted read-only at ${USB_MOUNTS}/${n}"
			fi
		done < <(lsblk -nrpo NAME "${disk}")
	done < <(lsblk -dnrpo NAME,TRAN)
}
mount_usb_sticks

# Several bundles are fine (a stick with a whole office's batch): the one made
# for this unit's serial number is applied; two that both fit are refused.
bundles=()
while IFS= read -r -d '' f; do
	bundles+=("${f}")
done < <(find "${BOOT}" -maxdepth 1 -type f -name '*.mamoru-bundle' -print0 2>/dev/null
	for m in "${usb_mounts[@]}"; do
		find "${m}" -maxdepth 2 -type f -name '*.mamoru-bundle' -print0 2>/dev/null
	done)
bundle_applied=0
if [ "${#bundles[@]}" -gt 0 ]; then
	log "found ${#bundles[@]} provisioning bundle(s): ${bundles[*]}"
	# Feeds are fetched at once (30 s timeout each); the whole apply gets 10 min.
	if apply_out=$(timeout 600 "${MAMORU}" provision apply "${bundles[@]}" --config-out "${CONFIG}" 2>&1); then
		bundle_applied=1
		while IFS= read -r line; do log "  ${line}"; done <<<"${apply_out}"
		# The boot partition is FAT, readable by anyone holding the card, and a
		# bundle holds alert tokens and password hashes: remove its copies there.
		find "${BOOT}" -maxdepth 1 -type f -name '*.mamoru-bundle' -delete
		log "provisioning bundle applied; removed the bundle(s) from the boot partition"
	else
		fail "no provisioning bundle was applied (the unit keeps its config; nothing unsigned is ever used):"
		while IFS= read -r line; do log "  ${line}"; done <<<"${apply_out}"
	fi
fi
unmount_usb
usb_mounts=()

# An image built with issuer keys takes its configuration from its issuer only:
# an unsigned mamoru.toml would bypass the signature.
signed_only=0
if compgen -G "/etc/mamoru/issuer-keys/*.json" >/dev/null; then
	signed_only=1
fi
if [ "${bundle_applied}" = "1" ]; then
	if [ -f "${BOOT}/mamoru.toml" ]; then
		log "ignoring ${BOOT}/mamoru.toml: the signed bundle's config was applied instead"
	fi
elif [ -f "${BOOT}/mamoru.toml" ] && [ "${signed_only}" = "1" ]; then
	fail "${BOOT}/mamoru.toml was NOT installed: this image trusts issuer keys and only accepts" \
		"signed *.mamoru-bundle files (docs/provisioning.md)"
elif [ -f "${BOOT}/mamoru.toml" ]; then
	log "found ${BOOT}/mamoru.toml, checking it"
	if check_out=$("${MAMORU}" config check --config "${BOOT}/mamoru.toml" 2>&1); then
		install -o root -g mamoru -m 0640 "${BOOT}/mamoru.toml" "${CONFIG}.new"
		mv -f "${CONFIG}.new" "${CONFIG}"
		# The file holds alert tokens and the boot partition is FAT (readable
		# by anyone holding the card): do not leave it there.
		rm -f "${BOOT}/mamoru.toml"
		log "installed ${CONFIG} from the boot partition and removed the boot copy"
	else
		fail "${BOOT}/mamoru.toml is invalid and was NOT installed; keeping the image's ${CONFIG}:"
		while IFS= read -r line; do log "  ${line}"; done <<<"${check_out}"
	fi
else
	log "no ${BOOT}/mamoru.toml: keeping the image's ${CONFIG}"
fi
if ! "${MAMORU}" config check --config "${CONFIG}" >/dev/null 2>&1; then
	fail "${CONFIG} does not pass 'mamoru config check'"
fi

# --- 3. speech model ----------------------------------------------------
models="${DATA}/models"
if [ -d "${models}" ] && [ -n "$(ls -A "${models}" 2>/dev/null)" ]; then
	log "speech models already present in ${models}"
elif [ -d /opt/mamoru/seed/models ]; then
	install -d -o mamoru -g mamoru -m 0755 "${models}"
	cp -a /opt/mamoru/seed/models/. "${models}/"
	chown -R mamoru:mamoru "${models}"
	log "copied the build's speech model seed to ${models}"
else
	log "no model seed in the image: running 'mamoru model install ${MAMORU_MODEL_LANG}'"
	install -d -o mamoru -g mamoru -m 0755 "${models}"
	if runuser -u mamoru -- "${MAMORU}" model install "${MAMORU_MODEL_LANG}" \
		--models-dir "${models}" --config "${CONFIG}"; then
		log "speech model ${MAMORU_MODEL_LANG} installed"
	else
		fail "speech model download failed (network?); calls are still screened by caller ID." \
			"Retry: sudo -u mamoru ${MAMORU} model install ${MAMORU_MODEL_LANG}"
	fi
fi

# --- 4. read-only root --------------------------------------------------
reboot_needed=0
if [ "${MAMORU_OVERLAY}" = "1" ] && [ "${data_ok}" = "1" ]; then
	if grep -q 'boot=overlay' /proc/cmdline; then
		log "read-only root (overlayfs) already active"
	elif raspi-config nonint do_overlayfs 0; then
		log "read-only root (overlayfs) enabled; rebooting into it"
		reboot_needed=1
	else
		fail "raspi-config nonint do_overlayfs 0 failed; root stays writable"
	fi
elif [ "${MAMORU_OVERLAY}" != "1" ]; then
	log "read-only root disabled in the image (MAMORU_OVERLAY=${MAMORU_OVERLAY})"
fi

# Mark done on the (still writable) root, before the overlay takes effect.
date -Is >"${DONE}"
log "finished with ${errors} error(s)"
if [ "${reboot_needed}" = "1" ]; then
	systemctl --no-block reboot
fi
# Errors are logged, not fatal: mamoru.service must still start and screen
# calls with whatever is there.
exit 0
