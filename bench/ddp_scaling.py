"""Samples/s of `python -m vae_core train`: 1 process x 2 threads vs 2 processes x 1 thread (torchrun).

    python bench/ddp_scaling.py --data-dir ../shared/mnist [--epochs 2]

Both runs train the same model with the same global batch size; the rate is the median of the
logged samples/s after the first epoch. On N GPUs the same command runs as
    torchrun --nproc-per-node N -m vae_core train --device cuda ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--arch", "mlp", "--hidden", "400", "--latent-dim", "20", "--batch-size", "128", "--device", "cpu"]


def rate(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["samples_per_s"] for r in records if r["event"] == "step" and r["epoch"] > 1]
    return statistics.median(steps or [r["samples_per_s"] for r in records if r["event"] == "step"])


def run(launcher: list[str], threads: int, data_dir: Path, epochs: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        *launcher,
        "-m",
        "vae_core",
        "train",
        "--data-dir",
        str(data_dir),
        "--epochs",
        str(epochs),
        "--threads",
        str(threads),
        "--out",
        str(out),
        *MODEL,
    ]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return rate(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "mnist")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = run([sys.executable], 2, args.data_dir, args.epochs, Path(tmp) / "single")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        ddp = run(torchrun, 1, args.data_dir, args.epochs, Path(tmp) / "ddp")
    print(f"1 process  x 2 threads: {single:8,.0f} samples/s")
    print(f"2 processes x 1 thread: {ddp:8,.0f} samples/s  ({ddp / single:.2f}x)")
    print("N GPUs: torchrun --nproc-per-node N -m vae_core train --device cuda ... (nccl, one GPU per rank)")


if __name__ == "__main__":
    main()
