#!/usr/bin/env bash
# Makes sure a Docker daemon answers. Starts Debian's dockerd when none does
# (Linux, as root or with passwordless sudo); elsewhere says what to do.
# Does nothing when one answers.
set -euo pipefail
if docker version >/dev/null 2>&1; then exit 0; fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "docker-up: DOCKER_HOST=$DOCKER_HOST does not answer; start that daemon, or unset DOCKER_HOST to use the local one." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
fi
if [ "$(uname -s)" != "Linux" ] || [ "$SUDO" = "none" ]; then
  echo "docker-up: no Docker daemon answers. Start Docker (Docker Desktop, or 'sudo systemctl start docker'), then run this again." >&2
  exit 1
fi
log=/var/log/changeover-dockerd.log
if ! $SUDO docker version >/dev/null 2>&1; then
  echo "docker-up: starting dockerd (log: $log)"
  $SUDO sh -c "nohup dockerd >'$log' 2>&1 </dev/null &"
  for _ in $(seq 1 60); do
    if $SUDO docker version >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
fi
if ! $SUDO docker version >/dev/null 2>&1; then
  echo "docker-up: dockerd did not answer within 30 s; last lines of $log:" >&2
  $SUDO tail -n 20 "$log" >&2
  exit 1
fi
if ! docker version >/dev/null 2>&1; then
  echo "docker-up: the daemon runs, but $(id -un) may not use its socket. Add yourself to the docker group ('sudo usermod -aG docker $(id -un)'), log in again, and rerun." >&2
  exit 1
fi
echo "docker-up: daemon answers"
