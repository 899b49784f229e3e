#!/usr/bin/env bash
# The hub demo from a fresh clone: a local Mosquitto + PostgreSQL (`mamoru hub servers`), `mamoru hub
# run`, the demo unit registered (broker password, CA, the hub's command key), then the demo's
# scripted calls (`mamoru run --line "sim:…"`, as scripts/demo.sh) reported to the hub. Prints the
# hub page's URL and a family login; Ctrl-C stops everything. Extra arguments go to `mamoru run`.
# Re-running reuses the directory (same passwords, database and key). Ports and directory:
#   MAMORU_HUB_DEMO_DIR (/tmp/mamoru-hub-demo)  MQTT_PORT (8883)  PG_PORT (5433)
#   HUB_PORT (8090, the hub page)  UNIT_WEB_PORT (8080, the unit's own page)
#   VOICE_MODELS_DIR: where `mamoru model install ja` put the speech model (then calls are listened to
#   for fraud; without one they are screened and recorded only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIR=${MAMORU_HUB_DEMO_DIR:-/tmp/mamoru-hub-demo}
MQTT_PORT=${MQTT_PORT:-8883}
PG_PORT=${PG_PORT:-5433}
HUB_PORT=${HUB_PORT:-8090}
UNIT_WEB_PORT=${UNIT_WEB_PORT:-8080}
UNIT=demo-unit
HOUSEHOLD=demo

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mamoru needs Python 3.11+" >&2; exit 2; }
if ! command -v mosquitto_passwd >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "hub-demo: installing Debian's mosquitto and postgresql (the hub's broker and database)"
    apt-get install -y --no-install-recommends mosquitto postgresql >/dev/null
  else
    echo "hub-demo: needs Mosquitto and PostgreSQL: sudo apt-get install --no-install-recommends mosquitto postgresql" >&2
    exit 2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# The hub extra (paho-mqtt, psycopg); skipped when already there (a re-run, or the test's venv).
.venv/bin/python -c 'import paho.mqtt, psycopg, screening' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[hub]'
MAMORU=.venv/bin/mamoru

mkdir -p "$DIR"
chmod 755 "$DIR"  # as root PostgreSQL runs as nobody and must reach its directory
DIR=$(cd "$DIR" && pwd)
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "hub-demo: $what did not come up in time" >&2; exit 1; fi
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "hub-demo: $what failed (see $DIR/*.log)" >&2; exit 1; }; done
    sleep 0.5
  done
}
port_open() { .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1"; }

# 1. Broker and database.
rm -f "$DIR/hub.toml"
"$MAMORU" hub servers --dir "$DIR" --unit "$UNIT" --mqtt-port "$MQTT_PORT" --pg-port "$PG_PORT" \
  --web-port "$HUB_PORT" >"$DIR/servers.log" 2>&1 &
PIDS+=($!)
wait_for 180 "mamoru hub servers (Mosquitto, PostgreSQL)" test -s "$DIR/hub.toml"
HUB_TOML=$DIR/hub.toml

# 2. The demo household: its unit, a family login (and a reviewer's), the hub's command key.
"$MAMORU" hub unit --config "$HUB_TOML" "$UNIT" --household "$HOUSEHOLD" --area demo-town >/dev/null
add_account() {  # add_account NAME ROLE [--household H]: once; its password is kept in $DIR/ROLE-login
  local name=$1 role=$2 login=$DIR/$2-login
  shift 2
  [ -s "$login" ] && return 0
  (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' >"$login.new")
  "$MAMORU" hub account --config "$HUB_TOML" "$name" --role "$role" "$@" <"$login.new" >/dev/null
  mv "$login.new" "$login"
}
add_account hanako family --household "$HOUSEHOLD"
add_account reviewer reviewer
COMMAND_KEY=$(.venv/bin/python -c 'import sys; from pathlib import Path
from screening.hubwire import CommandSigner, public_key_text
print(public_key_text(CommandSigner.load_or_create(Path(sys.argv[1])).public))' "$DIR/command.key")

# 3. The hub service: subscriber and hub page.
"$MAMORU" hub run --config "$HUB_TOML" >"$DIR/hub.log" 2>&1 &
PIDS+=($!)
wait_for 60 "mamoru hub run" port_open "$HUB_PORT"

# 4. The unit's settings: broker password and CA from the hub's directory (a real unit gets them in
#    its signed provisioning bundle), everything it keeps under $DIR/unit.
mkdir -p "$DIR/unit"
.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
  "$DIR/passwords.json" "$UNIT" >"$DIR/unit/hub-password"
chmod 600 "$DIR/unit/hub-password"
cat >"$DIR/unit/mamoru.toml" <<EOF
# Written by scripts/hub-demo.sh: the demo unit, reporting to the local hub.
[store]
db = "$DIR/unit/mamoru.db"

[recording]
dir = "$DIR/unit/recordings"

[web]
port = $UNIT_WEB_PORT

[feeds]
update_minutes = 0
${VOICE_MODELS_DIR:+
[voice]
models_dir = \"$VOICE_MODELS_DIR\"}

# The demo phones and messages nobody: its alerts are seen (and acknowledged) on the hub page.
[alerts]
voice_call = false

[[relatives]]
name = "花子"
phone = "0312345678"

[hub]
url = "mqtts://localhost:$MQTT_PORT"
unit_id = "$UNIT"
credentials_file = "$DIR/unit/hub-password"
ca_file = "$DIR/broker/tls/ca.pem"
command_key = "$COMMAND_KEY"
share = ["calls", "health", "reports", "transcripts"]
public_url = "http://127.0.0.1:$HUB_PORT"
EOF

echo "hub-demo: hub page http://127.0.0.1:$HUB_PORT/  family login: hanako / $(cat "$DIR/family-login")" \
     "  reviewer login: reviewer / $(cat "$DIR/reviewer-login")"
echo "hub-demo: broker mqtts://localhost:$MQTT_PORT, PostgreSQL 127.0.0.1:$PG_PORT, files in $DIR; Ctrl-C stops all"
# 5. The demo unit's scripted calls, reported to the hub; stay=1 keeps it running afterwards.
"$MAMORU" run --config "$DIR/unit/mamoru.toml" --line "sim:?stay=1" "$@"
