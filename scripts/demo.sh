#!/usr/bin/env bash
# Run the polymsg demo: no server to install with the default zmq:// transport
# (brokerless: the driver starts its per-host receiver in-process).
#
#   scripts/demo.sh                      # zmq://, brokerless
#   scripts/demo.sh --url memory://      # in-process bus
#   scripts/demo.sh --url rabbit://guest:guest@localhost:5672/
#
# Creates .venv in the checkout (with the current python3) on first use and
# installs polymsg and its drivers into it, then runs `polymsg demo`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${POLYMSG_VENV:-$ROOT/.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "demo: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV" || {
    echo "demo: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
if ! "$VENV/bin/python" -c "import polymsg.cli, polymsg_zmq, polymsg_kombu, polymsg_pika" \
    >/dev/null 2>&1; then
  echo "demo: installing polymsg and its drivers into $VENV" >&2
  "$VENV/bin/python" -m pip install -qq -e "$ROOT" -e "$ROOT/drivers/polymsg-zmq" \
    -e "$ROOT/drivers/polymsg-kombu" -e "$ROOT/drivers/polymsg-pika" >&2
fi
case " $* " in
  *" --url "*|*" --url="*) exec "$VENV/bin/polymsg" demo "$@" ;;
  *) exec "$VENV/bin/polymsg" demo --url zmq:// "$@" ;;
esac
