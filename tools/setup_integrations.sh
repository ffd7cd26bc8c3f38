#!/usr/bin/env bash
# Install what the integration tests run against, idempotently:
#  - InfluxDB 1.x from Debian's packages (the test starts its own influxd on loopback ports;
#    the packaged service is stopped/disabled so it never holds 8086 behind our back),
#  - a pinned Node-RED + FlowFuse Dashboard 2.0 from the npm registry into a cache directory
#    that is reused between runs (CI caches it).
# Usage: tools/setup_integrations.sh        (BLUEZ_JK_NODE_RED_DIR overrides the cache dir)
set -euo pipefail

NODE_RED_VERSION="4.1.8"
DASHBOARD_VERSION="1.31.0"
NODE_RED_DIR="${BLUEZ_JK_NODE_RED_DIR:-${HOME}/.cache/bluez-jk/node-red}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_influxdb() {
    if command -v influxd >/dev/null 2>&1; then
        echo "influxdb: already installed ($(influxd version 2>/dev/null | head -1))"
        return
    fi
    echo "influxdb: installing from Debian packages"
    # No service start during install: tests run their own influxd on free loopback ports.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y --no-install-recommends influxdb influxdb-client ||
        { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
            apt-get install -y --no-install-recommends influxdb influxdb-client; }
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now influxdb >/dev/null 2>&1 || true
    fi
}

install_node_red() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "node-red: installing nodejs + npm from Debian packages"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ||
            { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends nodejs npm; }
    fi
    local stamp="${NODE_RED_DIR}/.installed-${NODE_RED_VERSION}-${DASHBOARD_VERSION}"
    if [ -f "${stamp}" ] && [ -x "${NODE_RED_DIR}/node_modules/.bin/node-red" ]; then
        echo "node-red: ${NODE_RED_VERSION} + dashboard ${DASHBOARD_VERSION} already in ${NODE_RED_DIR}"
        return
    fi
    echo "node-red: installing ${NODE_RED_VERSION} + @flowfuse/node-red-dashboard ${DASHBOARD_VERSION} into ${NODE_RED_DIR}"
    mkdir -p "${NODE_RED_DIR}"
    rm -f "${NODE_RED_DIR}"/.installed-*
    # A private package.json keeps the install self-contained (no global npm prefix).
    if [ ! -f "${NODE_RED_DIR}/package.json" ]; then
        printf '{"name": "bluez-jk-node-red", "private": true}\n' >"${NODE_RED_DIR}/package.json"
    fi
    (cd "${NODE_RED_DIR}" &&
        npm install --no-audit --no-fund --omit=dev --save-exact \
            "node-red@${NODE_RED_VERSION}" "@flowfuse/node-red-dashboard@${DASHBOARD_VERSION}")
    touch "${stamp}"
}

start=$(date +%s)
install_influxdb
install_node_red
echo "setup_integrations: done in $(($(date +%s) - start)) s"
