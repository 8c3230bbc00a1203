"""Explorer slider latency with and without a training run in the background.

Times the work behind one Sliders move (decode + PNGs + CSV, `ui_latency.slider_step`) for N random
settings while nothing of ours trains, then again while a run started through `vae_core.jobs` (one
thread, as from the Train page) trains on MNIST in a temporary runs folder; the run is stopped at the
end. Prints p50 / p95 in milliseconds for both. Other processes on the machine are not controlled.

    python bench/train_latency.py [--checkpoint checkpoints/mnist-2d] [--settings 300] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ui_latency import percentiles, slider_step  # bench/ is first on sys.path; sets torch to one thread

from vae_core import RunSpec, jobs, load_checkpoint, read_metrics

ROOT = Path(__file__).resolve().parent.parent

SHARED_MNIST = ROOT.parent / "shared" / "mnist"


def start_background_run(root: Path, data_dir: str | None) -> jobs.Run:
    """A real MLP run on MNIST through the job manager; returns once it logs training steps."""
    spec = RunSpec.from_values({"model": {"hidden": (400,), "latent_dim": 20}, "train": {"epochs": 50}})
    run = jobs.start_run("bench", spec, root, data_dir=data_dir, device="cpu")
    deadline = time.monotonic() + 300
    while not any(r.event == "step" for r in read_metrics(run.path)):
        if jobs.read_run(run.path).status is not jobs.Status.RUNNING or time.monotonic() > deadline:
            sys.exit(f"the background run did not start training:\n{jobs.tail_log(run)}")
        time.sleep(0.5)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist-2d")
    parser.add_argument("--settings", type=int, default=300)
    parser.add_argument("--data-dir", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None)
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint)
    rng = np.random.default_rng(0)

    def step() -> None:
        slider_step(model, rng)

    percentiles(step, 10)  # warm-up
    results = {"idle": percentiles(step, args.settings)}
    with tempfile.TemporaryDirectory() as root:
        run = start_background_run(Path(root), args.data_dir)
        try:
            results["while training"] = percentiles(step, args.settings)
            samples = [r.samples_per_s for r in read_metrics(run.path) if r.event == "step"]
        finally:
            jobs.stop_run(run)
            while jobs.read_run(run.path).status is jobs.Status.RUNNING:
                time.sleep(0.2)
    for name, (p50, p95) in results.items():
        print(f"slider -> decoded image, {name:15s} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")
    rate = np.median(samples)
    print(f"({args.settings} settings each; the background run trained at {rate:.0f} images/s on 1 thread)")


if __name__ == "__main__":
    main()
