"""Speed of the Posterior computations for one test image: the 200×200 exact posterior grid of a 2-D
model, the IWAE curve up to k = 5000 and the per-image refinement of q.

Wall and CPU seconds, the median of several repeats (a shared machine makes wall time noisy).

    python bench/posterior_speed.py [--checkpoint checkpoints/mnist-2d] [--repeats 5] [--image 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from vae_core import eval_inputs, load_checkpoint, load_images
from vae_core.gaps import explain, iwae_curve, posterior_grid, refine_posterior


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of fn over `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist-2d")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image", type=int, default=0, help="index of the test image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    test = load_images(model.meta.dataset, "test", args.data_dir)
    x = eval_inputs(test, model.meta.spec.data.binarize)[args.image : args.image + 1]
    grid = posterior_grid(model, x)
    threads = torch.get_num_threads()
    print(f"{args.checkpoint}, test image {args.image}, {threads} threads, median of {args.repeats}")
    print(f"  window {tuple(round(v, 3) for v in grid.window)}, border mass {grid.border_mass:.1e}")
    print(f"  load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    jobs = {
        "posterior_grid 200x200": lambda: posterior_grid(model, x, n=200),
        "posterior_grid 200x200, window fixed": lambda: posterior_grid(model, x, n=200, window=grid.window),
        "iwae_curve k <= 5000": lambda: iwae_curve(model, x),
        "refine_posterior (300 steps)": lambda: refine_posterior(model, x),
        "explain (the Posterior page's computation)": lambda: explain(model, x),
    }
    for name, fn in jobs.items():
        wall, cpu = timed(fn, args.repeats)
        print(f"  {name:40s} {wall:6.3f} s wall  {cpu:6.3f} s CPU")


if __name__ == "__main__":
    main()
