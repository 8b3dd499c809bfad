#!/usr/bin/env bash
# Makes sure a Docker daemon answers. Starts Debian's dockerd when none does
# (Linux + root only); elsewhere says what to do. Does nothing when one answers.
set -euo pipefail
if docker version >/dev/null 2>&1; then exit 0; fi
if [ "$(uname -s)" != "Linux" ] || [ "$(id -u)" -ne 0 ]; then
  echo "docker-up: no Docker daemon answers. Start Docker Desktop or your daemon, then run this again." >&2
  exit 1
fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "docker-up: DOCKER_HOST=$DOCKER_HOST does not answer; unset it to use the local daemon." >&2
  exit 1
fi
log=/var/log/changeover-dockerd.log
echo "docker-up: starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker version >/dev/null 2>&1; then echo "docker-up: daemon answers"; exit 0; fi
  sleep 0.5
done
echo "docker-up: dockerd did not answer within 30 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
