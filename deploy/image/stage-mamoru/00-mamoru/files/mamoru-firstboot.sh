#!/bin/bash
# mamoru first-boot provisioning (installed as /usr/local/sbin/mamoru-firstboot,
# run once by mamoru-firstboot.service before mamoru.service).
#
#  1. mount the writable data partition (LABEL=mamoru-data) at /var/lib/mamoru
#  2. provisioning: a mamoru.toml on the boot partition is validated with
#     `mamoru config check` and installed as /etc/mamoru/mamoru.toml.
#     /boot/firmware/mamoru-provision.json is the future bundle format (later
#     issue); today its presence is only logged.
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
if [ -f "${BOOT}/mamoru-provision.json" ]; then
	log "found ${BOOT}/mamoru-provision.json: the bundle format is not implemented yet;" \
		"only ${BOOT}/mamoru.toml is applied today"
fi
if [ -f "${BOOT}/mamoru.toml" ]; then
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
