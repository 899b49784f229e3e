#!/bin/bash
# pi-gen sub-stage, fed to bash *inside* the target chroot (qemu-user on an
# x86 host): create the mamoru user, the venv, install the wheel, optionally
# build pjproject, pre-fetch the speech model, enable the units.
set -euo pipefail

# shellcheck source=/dev/null
. /opt/mamoru/dist/build.env
: "${MAMORU_DIST:?}" "${MAMORU_EXTRAS?}" "${MAMORU_BUILD_PJPROJECT:?}" "${MAMORU_MODEL_LANG:?}" "${MAMORU_MODEL_AT_BUILD:?}"

VENV=/opt/mamoru/venv

# --- service account: modem tty (dialout), audio devices, GPIO (relay/LED)
if ! getent passwd mamoru >/dev/null; then
	adduser --system --group --home /var/lib/mamoru --no-create-home \
		--shell /usr/sbin/nologin mamoru
fi
for g in dialout audio gpio; do
	if getent group "${g}" >/dev/null; then
		usermod -a -G "${g}" mamoru
	else
		echo "02-run-chroot.sh: group ${g} does not exist, skipped" >&2
	fi
done
chown root:mamoru /etc/mamoru/mamoru.toml
chmod 0640 /etc/mamoru/mamoru.toml
chown mamoru:mamoru /var/lib/mamoru

# --- the application
if [ ! -x "${VENV}/bin/python" ]; then
	python3 -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --no-cache-dir --upgrade pip
if [ -n "${MAMORU_EXTRAS}" ]; then
	target="mamoru[${MAMORU_EXTRAS}] @ file://${MAMORU_DIST}"
else
	target="${MAMORU_DIST}"
fi
"${VENV}/bin/python" -m pip install --no-cache-dir "${target}"
"${VENV}/bin/mamoru" --help >/dev/null
"${VENV}/bin/mamoru" config check --config /etc/mamoru/mamoru.toml
# Every baked-in issuer key must load: a broken one would make the units refuse
# every bundle from that office, in the field.
if [ "${MAMORU_ISSUER_KEYS:-0}" != "0" ]; then
	"${VENV}/bin/mamoru" provision keys --issuer-keys /etc/mamoru/issuer-keys --require
fi

# --- SIP (pjsua2): no aarch64 wheel exists, so build it. Slow under qemu
# (hours); usually better run on the Pi itself (docs/appliance.md).
if [ "${MAMORU_BUILD_PJPROJECT}" = "1" ]; then
	PJ_WORKDIR=/var/tmp/pjproject-build bash /opt/mamoru/dist/build_pjproject.sh "${VENV}"
	rm -rf /var/tmp/pjproject-build
fi

# --- speech model: /var/lib/mamoru is the data partition's mount point, so a
# model put there now would be hidden at boot. Keep a seed copy in /opt;
# mamoru-firstboot copies it onto the data partition, or downloads the model
# itself when this step had no network.
if [ "${MAMORU_MODEL_AT_BUILD}" = "1" ]; then
	seed=/opt/mamoru/seed/models
	install -d -m 0755 "${seed}"
	if "${VENV}/bin/mamoru" model install "${MAMORU_MODEL_LANG}" --models-dir "${seed}" \
		--config /etc/mamoru/mamoru.toml; then
		echo "02-run-chroot.sh: speech model ${MAMORU_MODEL_LANG} seeded in ${seed}"
	else
		echo "02-run-chroot.sh: WARNING: could not fetch the ${MAMORU_MODEL_LANG} model (no network?);" \
			"mamoru-firstboot will run 'mamoru model install ${MAMORU_MODEL_LANG}' on the Pi" >&2
		rm -rf "${seed}"
	fi
fi

# --- services
systemctl enable mamoru.service mamoru-firstboot.service
# Runtime watchdog is owned by systemd (system.conf.d); make sure no userspace
# watchdog daemon competes for /dev/watchdog.
if systemctl list-unit-files watchdog.service >/dev/null 2>&1; then
	systemctl disable watchdog.service >/dev/null 2>&1 || true
fi
