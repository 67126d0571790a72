#!/usr/bin/env bash
# The test command: installs what is missing (setup.sh), then runs every test, the real-weight ones included.
# Only the fast tests on tiny random models: python3 -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
HF_HUB_OFFLINE=1 python3 -m pytest -q "$@"
