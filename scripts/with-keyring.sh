#!/usr/bin/env bash
# Runs a command with a private, unlocked OS keyring: its own D-Bus session
# and a gnome-keyring-daemon whose files live in a throw-away folder. Tests
# use the real Secret Service this way without touching the user's own
# keyring, on a desktop and on a headless CI machine alike.
#
#   scripts/with-keyring.sh cargo test -p changeover-tests --test environments
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: with-keyring.sh COMMAND [ARGS...]" >&2; exit 2; }
if [ -z "${CHANGEOVER_KEYRING_INSIDE:-}" ]; then
  export CHANGEOVER_KEYRING_INSIDE=1
  exec dbus-run-session -- "$0" "$@"
fi
data=$(mktemp -d /tmp/changeover-keyring.XXXXXX)
trap 'kill "${GNOME_KEYRING_PID:-}" 2>/dev/null || true; rm -rf "$data"' EXIT
export XDG_DATA_HOME="$data"
# The password only unlocks this throw-away keyring.
eval "$(printf 'changeover-test' | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"
export GNOME_KEYRING_CONTROL GNOME_KEYRING_PID
for _ in $(seq 1 50); do
  if dbus-send --session --print-reply --dest=org.freedesktop.secrets /org/freedesktop/secrets \
      org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$@"
