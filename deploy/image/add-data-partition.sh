#!/bin/bash
# Add mamoru's writable data partition (ext4, LABEL=mamoru-data, mounted at
# /var/lib/mamoru by the image's fstab) to a freshly flashed SD card / SSD,
# before its first boot. Run on the Linux machine that flashed the card.
#
#   sudo deploy/image/add-data-partition.sh /dev/sdX [SIZE]
#
# SIZE: sfdisk size such as 8G; default: all the space after the root partition.
# Because the data partition then follows the root partition, Raspberry Pi
# OS's first-boot root expansion no longer applies: the root keeps the size
# pi-gen gave it, which is fine for a read-only root.
set -euo pipefail

LABEL=${MAMORU_DATA_LABEL:-mamoru-data}
if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
	echo "usage: $0 /dev/DISK [SIZE]" >&2
	exit 2
fi
DISK=$1
SIZE=${2:-+}
if [ "$(id -u)" != "0" ]; then
	echo "run as root (sudo)" >&2
	exit 2
fi
if [ "$(lsblk -dno TYPE "${DISK}" 2>/dev/null)" != "disk" ]; then
	echo "${DISK} is not a whole disk (give /dev/sdX or /dev/mmcblkN, not a partition)" >&2
	exit 2
fi
if lsblk -nro MOUNTPOINT "${DISK}" | grep -q .; then
	echo "${DISK} has mounted partitions: unmount them first (umount ${DISK}?*)" >&2
	exit 2
fi
if blkid -L "${LABEL}" >/dev/null 2>&1 && lsblk -nro LABEL "${DISK}" | grep -qx "${LABEL}"; then
	echo "${DISK} already has a ${LABEL} partition; nothing to do"
	exit 0
fi
nparts=$(lsblk -nro TYPE "${DISK}" | grep -c '^part$' || true)
if [ "${nparts}" != "2" ]; then
	echo "${DISK} has ${nparts} partitions; a freshly flashed mamoru image has exactly 2 (boot, root)" >&2
	exit 1
fi

lsblk -o NAME,SIZE,FSTYPE,LABEL "${DISK}"
if [ "${MAMORU_YES:-0}" != "1" ]; then
	read -r -p "Add partition 3 (${LABEL}, size ${SIZE}) to ${DISK}? Type yes: " answer
	[ "${answer}" = "yes" ] || { echo "aborted"; exit 1; }
fi

echo ",${SIZE},L" | sfdisk --append --no-reread "${DISK}"
partprobe "${DISK}" 2>/dev/null || blockdev --rereadpt "${DISK}"
udevadm settle
case "${DISK}" in
*[0-9]) PART="${DISK}p3" ;;
*) PART="${DISK}3" ;;
esac
for _ in 1 2 3 4 5 6 7 8 9 10; do
	[ -b "${PART}" ] && break
	sleep 1
done
[ -b "${PART}" ] || { echo "${PART} did not appear" >&2; exit 1; }
# 1% reserved blocks: nothing but mamoru writes here.
mkfs.ext4 -F -q -L "${LABEL}" -m 1 "${PART}"
lsblk -o NAME,SIZE,FSTYPE,LABEL "${DISK}"
echo "done: ${PART} is ${LABEL}; it is mounted at /var/lib/mamoru on the appliance"
