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
    import torch

    from jambatalk.errors import CheckpointError
    from jambatalk.fileio import atomic_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="model folder, e.g. runs/default/best")
    parser.add_argument("--dst", default=str(default_model_path()), help="destination (default: the package's)")
    args = parser.parse_args(argv)
    model = JambaTalk.from_pretrained(args.checkpoint)
    if not model.faces.numel() or not model.template.abs().sum():
        raise CheckpointError(f"'{args.checkpoint}' carries no template or faces", "train it through `jambatalk train`")
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"'{args.checkpoint}' has non-finite weights ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}), which animate() would refuse",
                              "export a checkpoint saved before the run diverged")
    dst = Path(args.dst)
    with atomic_dir(dst) as tmp:  # replaces --dst only once the size is checked: a refused export leaves it as it was
        model.write_model_files(tmp)
        size = sum(f.stat().st_size for f in tmp.iterdir()) / 2**20
        if size > LIMIT_MB:
            raise CheckpointError(f"the model takes {size:.1f} MB, over the {LIMIT_MB:.0f} MB limit for the built-in "
                                  f"model; '{dst}' was left as it was", "export a smaller model (e.g. the default preset)")
    print(f"wrote {dst} ({size:.1f} MB, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    from jambatalk.errors import script_exit

    sys.exit(script_exit("export_default", main))
