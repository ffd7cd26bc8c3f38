#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, static checks, then pytest.
# Extra arguments go to pytest (e.g. `bash tools/test.sh -k protocol`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export PATH="$PATH:/usr/sbin:/sbin"

ruff check .
ruff format --check .
mypy
if [ -f systemd/jk-ble-mqtt-gateway.service ]; then
  python tools/check_unit_security.py systemd/jk-ble-mqtt-gateway.service
fi

set +e
python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
