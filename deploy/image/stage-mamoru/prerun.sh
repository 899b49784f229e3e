#!/bin/bash
# pi-gen stage prerun: start from the previous stage's root filesystem
# (stage2 = Raspberry Pi OS Lite). copy_previous is provided by pi-gen.
set -euo pipefail

if [ ! -d "${ROOTFS_DIR}" ]; then
	copy_previous
fi
