"""Export a trained checkpoint as the built-in default model (jambatalk/assets/default).

    python tools/export_default.py runs/default/best

Writes config.json + model.safetensors only (no optimizer state) and prints the size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jambatalk.api import default_model_path
from jambatalk.model import JambaTalk

LIMIT_MB = 25.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="model folder, e.g. runs/default/best")
    parser.add_argument("--dst", default=str(default_model_path()), help="destination (default: the package's)")
    args = parser.parse_args(argv)
    model = JambaTalk.from_pretrained(args.checkpoint)
    if not model.faces.numel() or not model.template.abs().sum():
        print("error: the checkpoint carries no template or faces; train it through `jambatalk train`", file=sys.stderr)
        return 2
    dst = model.save_pretrained(Path(args.dst))
    size = sum(p.stat().st_size for p in dst.iterdir()) / 2**20
    print(f"wrote {dst} ({size:.1f} MB, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)")
    if size > LIMIT_MB:
        print(f"error: {size:.1f} MB is over the {LIMIT_MB:.0f} MB limit for the built-in model", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from jambatalk.errors import script_exit

    sys.exit(script_exit("export_default", main))
