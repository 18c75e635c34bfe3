#!/usr/bin/env bash
# Debian's Chromium, for the run report's screenshot check (`make screenshot`, and a test in `make test`).
# Installed once with apt; nothing is downloaded by a test tool of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "install_chromium: Chromium is missing and apt needs root: run \`sudo apt-get install chromium\` (Debian/Ubuntu) once." >&2
  exit 1
fi
echo "install: Debian's chromium (apt, ~30 s)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
chromium --version
