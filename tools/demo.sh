#!/usr/bin/env bash
# No-hardware quick start: sets everything up, then runs the gateway against the built-in BlueZ
# simulator (two emulated JK-BMS on a private D-Bus) and shows the live MQTT messages until
# Ctrl-C. Uses the broker in BLUEZ_JK_MQTT_HOST[:BLUEZ_JK_MQTT_PORT] when set; otherwise starts a
# private mosquitto on a free loopback port. Never touches the system bus or port 1883.
# Isolated from a real installation on the same machine or broker: its own adapter lock
# directory (not /run/lock), its own MQTT client ids and the base topic `demo` (not `bms`), so
# it neither waits for nor disconnects a running gateway, and nothing it publishes reaches the
# topics that InfluxDB or Home Assistant read.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export PATH="$PATH:/usr/sbin:/sbin"

work=$(mktemp -d -t bluez-jk-demo.XXXXXX)
pids=()
cleanup() {
  # A second Ctrl-C while stopping must not cut the clean-up short (leftovers in /tmp).
  trap '' INT TERM
  trap - EXIT
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  echo "bluez-jk demo: stopped, nothing left behind" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

base=demo
export BLUEZ_JK_LOCK_DIR="$work/locks"
mkdir -p "$BLUEZ_JK_LOCK_DIR"

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "${BLUEZ_JK_MQTT_HOST:-}" ]; then
  host=$BLUEZ_JK_MQTT_HOST
  port=${BLUEZ_JK_MQTT_PORT:-1883}
else
  host=127.0.0.1
  port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
fi

# The simulator starts its own private dbus-daemon and prints its address first.
python -m bluez_jk.sim --spawn-bus \
  --device C8:47:80:37:02:E8,adapter=hci0,protocol=JK02_32S,name=JK_PB2A16S20P,cells=16 \
  --device C8:47:80:11:22:33,adapter=hci1,protocol=JK02_24S,name=JK-B2A24S20P,cells=8 \
  >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
busline=""
for _ in $(seq 100); do
  busline=$(head -n 1 "$work/sim.out" 2>/dev/null || true)
  [ -n "$busline" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/sim.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$busline" ] || { echo "demo: the simulator printed no bus address" >&2; exit 1; }
export "${busline?}"

cat >"$work/gateway.json" <<JSON
{
  "mqtt": {"host": "$host", "port": $port, "base_topic": "$base", "keepalive": 10,
           "client_id": "bluez-jk-demo-$$"},
  "poll_interval_s": 5, "timeout_s": 15, "scan_timeout_s": 3,
  "state_dir": "$work/state",
  "devices": [
    {"name": "jk1", "address": "C8:47:80:37:02:E8", "adapter": "hci0"},
    {"name": "jk2", "address": "C8:47:80:11:22:33", "adapter": "hci1"}
  ]
}
JSON
python -m bluez_jk.cli.gateway --config "$work/gateway.json" 2>"$work/gateway.log" &
pids+=($!)

echo "bluez-jk demo: simulator on $DBUS_SYSTEM_BUS_ADDRESS, broker $host:$port, topics $base/#" >&2
echo "logs in $work; press Ctrl-C to stop" >&2
mosquitto_sub -h "$host" -p "$port" -i "bluez-jk-demo-sub-$$" -v -t "$base/#" &
pids+=($!)
wait "${pids[-1]}"
