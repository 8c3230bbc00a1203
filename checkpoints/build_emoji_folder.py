"""Build a folder of real colour images: Google's Noto emoji (Apache-2.0), one subfolder per category.

    python checkpoints/build_emoji_folder.py data/emoji

Fetches `emoji-datasource-google@16.0.0` with `npm pack` (the npm registry's checksummed tarball),
reads `package/emoji.json` for each image's `category`, and writes `OUT/<category>/<file>.png` from
`package/img/google/64/`. Skin-tone variants go in their base emoji's category. The "Component"
category (bare skin-tone and hair swatches) and categories with fewer than MIN_PER_CLASS images are
left out; the script prints which. The images are never committed (data/ is git-ignored); import
the folder with `--dataset folder --data-dir OUT`. Uses only the standard library: the PNGs are
copied byte for byte.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

PACKAGE = "emoji-datasource-google@16.0.0"
IMAGE_DIR = "package/img/google/64/"
LEFT_OUT = ("Component",)
MIN_PER_CLASS = 20


def fetch_tarball(folder: Path) -> Path:
    """`npm pack` the package into `folder`; the tarball's path."""
    done = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent"], cwd=folder, check=True, capture_output=True, text=True
    )
    return folder / done.stdout.strip().splitlines()[-1]


def categories(emoji: list[dict]) -> dict[str, str]:
    """Image file name -> category, for every emoji and skin-tone variant Google draws."""
    found = {}
    for entry in emoji:
        variants = [entry, *entry.get("skin_variations", {}).values()]
        for variant in variants:
            if variant.get("has_img_google", True) and variant.get("image"):
                found[variant["image"]] = entry["category"]
    return found


def arrange(tarball: Path, out: Path) -> dict[str, int]:
    """Write out/<category>/<file>.png for the kept categories; images per category written."""
    with tarfile.open(tarball) as tar:
        category_of = categories(json.load(tar.extractfile("package/emoji.json")))
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(IMAGE_DIR)]
        by_category = defaultdict(list)
        for member in members:
            name = Path(member.name).name
            if name in category_of:
                by_category[category_of[name]].append(member)
        kept = {c: ms for c, ms in by_category.items() if c not in LEFT_OUT and len(ms) >= MIN_PER_CLASS}
        for category, ms in kept.items():
            (out / category).mkdir(parents=True)
            for member in ms:  # our own file names, never the archive's paths
                (out / category / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    for category in sorted(set(by_category) - set(kept)):
        print(f"left out {category!r}: {len(by_category[category])} images", file=sys.stderr)
    unmatched = len(members) - sum(map(len, by_category.values()))
    if unmatched:
        print(f"left out {unmatched} images that emoji.json does not list", file=sys.stderr)
    return {c: len(ms) for c, ms in sorted(kept.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to create (must not exist or be empty)")
    out = parser.parse_args().out
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; remove it or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=out.parent) as partial:
        counts = arrange(fetch_tarball(Path(tmp)), Path(partial) / "images")
        if out.exists():
            out.rmdir()  # empty, checked above
        (Path(partial) / "images").rename(out)  # whole or not at all: a failed build leaves no folder
    for category, n in counts.items():
        print(f"{n:5d}  {category}")
    print(f"{sum(counts.values()):5d}  images in {len(counts)} classes under {out}")


if __name__ == "__main__":
    main()
