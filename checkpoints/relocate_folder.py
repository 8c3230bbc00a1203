"""Store where a folder-trained checkpoint finds its images, e.g. relative to the project for shipping.

    python checkpoints/relocate_folder.py checkpoints/emoji-conv data/emoji

`train --dataset folder` stores the absolute path of --data-dir in the run spec (`DataSpec.folder`), so
that `evaluate` and the explorer rebuild the same test split. A shipped model cannot name a path on the
machine that trained it: this rewrites the spec's folder (a relative one is read from the working
directory, the project root for the app and the tests) and leaves the weights and metrics as they are.
"""

from __future__ import annotations

import argparse

from vae_core.checkpoint import atomic_save, model_file, read_checkpoint
from vae_core.spec import RunSpec


def relocate(checkpoint: str, folder: str) -> RunSpec:
    """Rewrite the checkpoint's data folder; the new spec."""
    ckpt = read_checkpoint(checkpoint)
    spec = RunSpec.from_dict(ckpt["spec"])
    if spec.data.name != "folder":
        raise SystemExit(f"{checkpoint} was trained on {spec.data.name}, not a folder of images")
    spec = spec.with_values({"data": {"folder": folder}})
    ckpt["spec"] = spec.to_dict()
    atomic_save(ckpt, model_file(checkpoint))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder trained with --dataset folder")
    parser.add_argument("folder", help="where its images are, e.g. data/emoji")
    args = parser.parse_args()
    print(f"{args.checkpoint}: data folder {relocate(args.checkpoint, args.folder).data.folder}")


if __name__ == "__main__":
    main()
