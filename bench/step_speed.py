"""Milliseconds per training step of the 784-400-20 recipe: autograd against the written-out gradient,
with float32 products and with bfloat16 ones (`--precision bf16`).

The steps draw the same batches (dynamically binarised MNIST, batch 128), use the same fused Adam
and run alternately in one process, in rounds of 100 steps, so the VM's drift hits them alike. Also
printed: the step's matrix products alone in each dtype (`train_speed.matmul_floor`), which no step
with its products in that dtype can beat.

    python bench/step_speed.py [--data-dir ../shared/mnist] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from train_speed import matmul_floor  # bench/ is this script's folder, first on sys.path

from vae_core import VAE, VAEConfig, fast, load_images
from vae_core.data import to_float
from vae_core.fast import MLPBackprop

ROOT = Path(__file__).resolve().parents[1]

BATCH = 128
Step = Callable[[torch.Tensor], None]


def autograd_step(model: VAE, opt: torch.optim.Optimizer) -> Step:
    def step(x: torch.Tensor) -> None:
        terms = fast.elbo_terms(model, x)  # as the trainer steps a model it cannot write out
        opt.zero_grad(set_to_none=True)
        terms.loss().backward()
        opt.step()

    return step


def explicit_step(products: torch.dtype) -> Callable[[VAE, torch.optim.Optimizer], Step]:
    def build(model: VAE, opt: torch.optim.Optimizer) -> Step:
        backprop = MLPBackprop(model, products)

        def step(x: torch.Tensor) -> None:
            backprop(x, 1.0)
            opt.step()

        return step

    return build


def make(kind: Callable[[VAE, torch.optim.Optimizer], Step]) -> Step:
    torch.manual_seed(0)
    model = VAE(VAEConfig(arch="mlp", hidden=(400,), latent_dim=20))
    return kind(model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True))


def ms_per_step(step: Step, images: torch.Tensor, n: int = 100) -> float:
    order = torch.randperm(len(images))
    start = time.perf_counter()
    for i in range(n):
        step(to_float(images.index_select(0, order[i * BATCH : (i + 1) * BATCH]), "dynamic"))
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "mnist")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # before any parallel op, so that every OpenMP thread inherits it
    images = load_images("mnist", "train", args.data_dir).images
    steps = {
        "autograd": make(autograd_step),
        "written out": make(explicit_step(torch.float32)),
        "written out, bf16": make(explicit_step(torch.bfloat16)),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        ms_per_step(step, images, 30)  # warm-up
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(ms_per_step(step, images))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds of 100 steps")
    for name, ms in times.items():
        print(f"{name:22s} median {statistics.median(ms):.2f} ms/step  (fastest round {min(ms):.2f})")
    steps_per_epoch = -(-60_000 // BATCH)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        floor = matmul_floor(dtype=dtype) / steps_per_epoch * 1e3
        print(f"{f'products alone, {name}':22s} {floor:.2f} ms/step")


if __name__ == "__main__":
    main()
