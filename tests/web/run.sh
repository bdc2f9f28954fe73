#!/usr/bin/env bash
# Browser tests of the kiosk page and the staff console: builds kioskd and
# hq-ingest (the local HQ that issues applicants' certificates), installs the locked npm
# packages (playwright-core, @axe-core/playwright) if needed, and runs
# kiosk.test.mjs with Debian's chromium headless. Screenshots of every step go
# to artifacts/screenshots/ at the repository root. Needs the Debian packages
# chromium, fonts-noto-cjk, softhsm2, opensc (pkcs11-tool) and postgresql (for
# the local HQ), and node >= 20 with npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

(cd "$root" && cargo build --quiet -p kioskd -p hq-ingest --bins)
export KIOSKD_BIN="$target/debug/kioskd"
export KIOSKD_HQ_INGEST="$target/debug/hq-ingest"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export SCREENSHOTS="$root/artifacts/screenshots"
[ -x "$CHROMIUM" ] || { echo "no chromium at $CHROMIUM (apt-get install chromium fonts-noto-cjk)"; exit 1; }

cd "$here"
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/@axe-core/playwright ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
rm -rf "$SCREENSHOTS"
mkdir -p "$SCREENSHOTS"
exec node kiosk.test.mjs
