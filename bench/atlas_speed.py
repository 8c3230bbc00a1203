"""Speed of the Atlas page's computations: encoding the test set and each 2-D projection, cold and warm.

Wall and CPU seconds; cold = nothing on disk (a fresh, empty cache folder), warm = read back from
the disk cache. UMAP's import and numba compilation (what `warm_up_umap` does in the background at
app start) are timed on their own, before the first real UMAP, so the UMAP numbers are what a user
waits for after warm-up.

    python bench/atlas_speed.py [--checkpoint checkpoints/mnist-best] [--n 10000] [--methods pca umap tsne]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from vae_core import eval_inputs, load_checkpoint, load_images
from vae_core import projection as pj


def timed(fn):
    """fn's result and its wall time; CPU time of this process goes to CPU (a shared machine
    makes wall time noisy)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    CPU.append(time.process_time() - cpu)
    return result, time.perf_counter() - start


CPU: list[float] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist-best")
    parser.add_argument("--n", type=int, default=10_000, help="test images to encode and project")
    parser.add_argument("--methods", nargs="+", default=["pca", "umap", "tsne"], choices=pj.METHODS)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for encoding")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["VAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="atlas-bench-")

    model = load_checkpoint(args.checkpoint)
    test = load_images(model.meta.dataset, "test", download=False)
    x = eval_inputs(test.images[: args.n], model.meta.spec.data.binarize)
    print(f"{args.checkpoint}: latent_dim {model.config.latent_dim}, {len(x)} test images, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")  # fmt: skip

    key = pj.cache_key(args.checkpoint, "test", len(x), "scores")
    encoded, cold = timed(lambda: pj.cached(key, lambda: pj.score_inputs(model, x)))
    _, warm = timed(lambda: pj.cached(key, lambda: pj.score_inputs(model, x)))
    print(
        f"{'encode + score':>16}: cold {cold:7.2f} s   warm {warm:6.3f} s   (cold CPU {CPU[-2]:.2f} s)",
    )

    if "umap" in args.methods:
        _, imported = timed(lambda: __import__("umap"))
        _, compiled = timed(lambda: pj.warm_up_umap().join())  # the thread's CPU time counts too
        print(f"{'import umap':>16}: {imported:7.2f} s   numba compile (warm_up_umap): {compiled:6.2f} s")

    for method in args.methods:
        key = pj.cache_key(args.checkpoint, "test", len(x), method, seed=0, **pj.DEFAULTS[method])
        compute = lambda m=method: pj.project(encoded["mu"], m, seed=0).arrays()  # noqa: E731
        _, cold = timed(lambda k=key, c=compute: pj.cached(k, c))
        _, warm = timed(lambda k=key, c=compute: pj.cached(k, c))
        print(f"{method:>16}: cold {cold:7.2f} s   warm {warm:6.3f} s   (cold CPU {CPU[-2]:.2f} s)")


if __name__ == "__main__":
    main()
