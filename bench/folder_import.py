"""Speed and peak memory of importing a folder of images: the decoding pass (cold) and a cached read (warm).

    python bench/folder_import.py [--n 20000] [--dir DIR] [--image-size 64] [--channels 3]

Without --dir it makes (once, then reuses) a folder of N synthetic JPEGs in 10 class folders under
the system's temp folder: smooth colour fields with noise, sides from 160 to 640 px. Each phase runs
in its own process, so its peak resident memory (getrusage's ru_maxrss) is its own:
- baseline: Python with vae_core.folder (and so torch) imported, nothing read;
- cold: `cache_folder` on an empty cache: the streaming decoding pass alone;
- warm: `import_folder` on that cache: the listing, fingerprint and the two splits copied out of the
  memory map into tensors (the N x C x S x S bytes the ImageSets hold).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = 10
MIN_SIDE, MAX_SIDE = 160, 640


def make_folder(folder: Path, n: int) -> None:
    """n JPEGs in folder/c<k>/, written once (a complete folder has a marker file beside it)."""
    import numpy as np
    from PIL import Image

    marker = folder.with_name(folder.name + ".complete")
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    noise = Image.effect_noise((MAX_SIDE, MAX_SIDE), 24).convert("RGB")  # made once: it is slow
    for i in range(n):
        width, height = (int(s) for s in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
        colours = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        field = Image.fromarray(colours).resize((width, height), Image.Resampling.BILINEAR)
        path = folder / f"c{i % CLASSES}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.blend(field, noise.crop((0, 0, width, height)), 0.2).save(path, quality=85)
    marker.touch()


def phase(name: str, folder: Path, cache: Path, image_size: int, channels: int) -> dict:
    """Run one phase in this process; its wall time and peak resident memory."""
    from vae_core.folder import cache_folder, import_folder

    start = time.perf_counter()
    if name == "cold":
        cache_folder(folder, image_size=image_size, channels=channels, cache_dir=cache)
    elif name == "warm":
        result = import_folder(folder, image_size=image_size, channels=channels, cache_dir=cache)
        assert result.report.from_cache, "the warm phase found no cache"
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    return {"phase": name, "seconds": seconds, "peak_mb": peak_mb}


def run_phase(name: str, args: argparse.Namespace, folder: Path, cache: Path) -> dict:
    """`phase` in a fresh Python process: its own peak memory."""
    command = [sys.executable, __file__, "--phase", name, "--dir", str(folder), "--cache", str(cache)]
    command += ["--image-size", str(args.image_size), "--channels", str(args.channels)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="synthetic JPEGs to make (without --dir)")
    parser.add_argument("--dir", type=Path, help="an existing folder of images to import instead")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--phase", choices=("baseline", "cold", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.dir, args.cache, args.image_size, args.channels)))
        return

    folder = args.dir or Path(tempfile.gettempdir()) / f"folder-bench-{args.n}"
    if args.dir is None:
        start = time.perf_counter()
        make_folder(folder, args.n)
        print(f"synthetic folder {folder} ready in {time.perf_counter() - start:.0f} s")
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="folder-bench-cache-") as cache:
        results = [run_phase(name, args, folder, Path(cache)) for name in ("baseline", "cold", "warm")]
        cache_mb = sum(p.stat().st_size for p in Path(cache).rglob("*.npy")) / 2**20
    base = results[0]["peak_mb"]
    print(f"{n} files, {args.image_size} px, {args.channels} channels; cache {cache_mb:.0f} MiB")
    print(f"{'baseline':>9}: peak RSS {base:7.0f} MiB (Python + torch)")
    for r in results[1:]:
        rate = n / r["seconds"]
        print(
            f"{r['phase']:>9}: {r['seconds']:7.2f} s  {rate:8.0f} images/s  "
            f"peak RSS {r['peak_mb']:7.0f} MiB (+{r['peak_mb'] - base:.0f} over baseline)"
        )


if __name__ == "__main__":
    main()
