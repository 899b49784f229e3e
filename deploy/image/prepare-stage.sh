#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# Make deploy/image/stage-mamoru self-contained for pi-gen: copy the example
# config, systemd unit, udev rule, journald drop-in and build_pjproject.sh into
# its files/ dir and build the mamoru wheel there.
#
#   deploy/image/prepare-stage.sh            (from anywhere; uses this checkout)
#
# Then copy or point pi-gen's STAGE_LIST at deploy/image/stage-mamoru
# (docs/appliance.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${MAMORU_REPO:-$(cd "${HERE}/../.." && pwd)}
FILES="${HERE}/stage-mamoru/00-mamoru/files"
PYTHON=${PYTHON:-python3}
# shellcheck source=stage-mamoru/00-mamoru/layout.sh
. "${HERE}/stage-mamoru/00-mamoru/layout.sh"

mamoru_collect_inputs "${REPO}" "${FILES}"
mamoru_require_inputs "${FILES}"

rm -f "${FILES}"/mamoru-*.whl "${FILES}"/mamoru-*.tar.gz
# Pure-Python wheel (py3-none-any): builds here, installs on the Pi.
"${PYTHON}" -m pip wheel --no-deps --no-cache-dir --wheel-dir "${FILES}" "${REPO}"
echo "stage ready: ${HERE}/stage-mamoru"
ls -l "${FILES}"
