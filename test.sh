#!/usr/bin/env bash
# The test command: installs what is missing (setup.sh, and a headless Chromium for serve.py's page), then runs every
# test, the real-weight ones included.
# Only the fast tests on tiny random models: python3 -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
if ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver (tests/test_serve.py drives serve.py's page in them)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
HF_HUB_OFFLINE=1 python3 -m pytest -q "$@"
