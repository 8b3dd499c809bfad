#!/usr/bin/env bash
# Installs everything Changeover needs to build, run and test on Debian/Ubuntu,
# and starts a Docker daemon when none answers. Safe to run again: every step
# checks first and does nothing when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "setup: needs root or passwordless sudo to install system packages" >&2
    exit 1
  fi
fi

APT_PACKAGES=(
  # Tauri 2 build stack
  build-essential pkg-config curl file libssl-dev libwebkit2gtk-4.1-dev
  libxdo-dev libayatana-appindicator3-dev librsvg2-dev
  # Docker engine and the fixture images' only binary
  docker.io busybox-static
  # C compiler for the static (musl) edge binary's allocator
  musl-tools
  # GUI tests: a virtual display, the WebKit WebDriver, fonts for screenshots,
  # xwininfo to see the native dialogs WebDriver cannot
  xvfb webkit2gtk-driver fonts-dejavu-core x11-utils
  # OS keyring: libdbus for the Secret Service client, and for the tests a
  # private session bus with gnome-keyring (scripts/with-keyring.sh)
  libdbus-1-dev dbus dbus-x11 gnome-keyring
  # Remote environments in the tests: network namespaces, ssh client tools,
  # an OpenSSL for a throw-away TLS server
  iproute2 openssh-client openssl
  # Load generators for the benchmarks (h2load sends SNI for bench/edge's HTTPS)
  wrk nghttp2-client
  # The ACME test server (and its mock DNS) the edge's HTTPS tests order
  # certificates from, on loopback
  pebble
  # htpasswd (bcrypt) for the tests' registry with authentication; skopeo,
  # bench/images' baseline for listing tags
  apache2-utils skopeo
)
# Servers that run only as processes of benchmarks and tests (bench/edge's
# proxies, the tests' sshd and registries), so their system services are
# kept from starting on install.
PROXY_PACKAGES=(haproxy nginx-light openssh-server docker-registry)
# Node.js 20+ with npm builds the UI. A machine that already has them (for example
# from NodeSource) keeps its own; Debian's packages are the fallback.
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
missing=()
for p in "${PROXY_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} (services left stopped)"
  policy=/usr/sbin/policy-rc.d
  placed=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    placed=yes
  fi
  $SUDO apt-get update -qq
  status=0
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [ "$placed" = yes ]; then $SUDO rm -f "$policy"; fi
  [ "$status" -eq 0 ] || exit "$status"
fi

node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number); console.log(a>20||(a===20&&b>=19)?"yes":"no")' 2>/dev/null || echo no)
if [ "$node_ok" != "yes" ]; then
  echo "setup: the UI needs Node.js 20.19 or newer (found: $(node --version 2>/dev/null || echo none)); install it, for example from NodeSource, then run this again" >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is missing; install it with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
for component in clippy rustfmt; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
# The edge ships as a static binary in a FROM-scratch image (musl-gcc from
# musl-tools compiles its allocator, mimalloc).
rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-linux-musl$' \
  || rustup target add x86_64-unknown-linux-musl

# tauri-driver bridges WebDriver clients to WebKitWebDriver for the GUI tests.
if ! command -v tauri-driver >/dev/null 2>&1; then
  echo "setup: installing tauri-driver"
  cargo install tauri-driver --locked --version "^2" --quiet
fi

# The UI's npm dependencies, exactly as locked.
if [ ! -d ui/node_modules ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
  echo "setup: installing the UI's npm dependencies"
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
fi

bash scripts/docker-up.sh
