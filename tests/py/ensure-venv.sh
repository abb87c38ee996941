#!/usr/bin/env bash
# Creates (once) the Python virtualenv holding the independent implementations that the tests
# judge our output with, and prints the path of its python. Safe to call from parallel tests:
# creation happens under a lock. Override the location with KIT_VENV.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KIT_VENV:-$root/target/py-venv}
req=$here/requirements.txt
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
