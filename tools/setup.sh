#!/usr/bin/env bash
# Idempotent set-up on Debian / Raspberry Pi OS: the system packages the tests and the demo
# need (a private dbus-daemon and mosquitto are started by them, never the system ones), then
# a virtual environment in .venv with the project and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

need=()
have dbus-daemon || need+=(dbus)
have mosquitto || need+=(mosquitto)
have mosquitto_sub || need+=(mosquitto-clients)
have systemd-analyze || need+=(systemd)
# The real-BlueZ tier (x86-64 only): QEMU, a Debian kernel image to boot in it, the real
# bluetoothd, modprobe, setpriv, a static busybox. A kernel package lands in /boot, so on a developer's machine
# this happens only when asked (BLUEZ_JK_REALBLUEZ_SETUP=1); CI always installs it.
if [ "$(uname -m)" = x86_64 ] && { [ "${CI:-}" = true ] || [ "${BLUEZ_JK_REALBLUEZ_SETUP:-}" = 1 ]; }; then
  have qemu-system-x86_64 || need+=(qemu-system-x86)
  ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
  [ -x /usr/libexec/bluetooth/bluetoothd ] || need+=(bluez)
  have modprobe || need+=(kmod)
  have setpriv || need+=(util-linux)
  # virtme-ng builds its initramfs (Debian's 9p/virtio modules) from a statically linked
  # busybox: without one the VM does not boot ("please install busybox-static").
  { have busybox && ! ldd "$(command -v busybox)" >/dev/null 2>&1; } || need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup: Python >= 3.11 is required ($py is $("$py" --version 2>&1))" >&2; exit 2; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,realbluez]' >&2
