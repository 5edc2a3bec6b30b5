#!/usr/bin/env bash
# Set up jambatalk on a fresh Debian/Ubuntu machine and run the demo.
#   bash tools/setup.sh            # system packages, .venv, jambatalk + extras, then `jambatalk demo`
#   bash tools/setup.sh --no-demo  # the same without the demo
# Environment: VENV (default .venv), TORCH_SPEC (default torch==2.13.0; e.g. "torch" for the newest).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
DEMO=1
[ "${1:-}" = "--no-demo" ] && DEMO=0

# espeak-ng: speech for the demo and the built-in corpus; EGL + Mesa: headless rendering;
# gcc: the compiled CPU scan (optional: without a C compiler the PyTorch scan runs).
PKGS="espeak-ng libespeak-ng1 libegl1 libgl1-mesa-dri libsndfile1 gcc"
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
else
    echo "setup: apt-get not found; install the equivalents of: $PKGS" >&2
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so the package's open torch range is already satisfied (no second download).
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[render,dev]"

if [ "$DEMO" = 1 ]; then
    "$VENV/bin/jambatalk" demo --out demo.mp4
fi
