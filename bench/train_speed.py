"""Seconds per epoch: the canonical PyTorch VAE example vs `python -m vae_core train`.

The canonical recipe is pytorch/examples' vae/main.py: MLP 784-400-20, Adam 1e-3, batch 128,
torchvision MNIST with `ToTensor` through a `DataLoader`, sigmoid + BCE + KL, a test pass per epoch.
As published it loads batches in the training process on a CPU (`num_workers=1` only with CUDA);
the bench also times it with one loader worker, a stronger baseline that overlaps loading with
training on the second core. Ours trains the same architecture, batch size and epochs (and also
evaluates the test set and saves a checkpoint every epoch) twice: in float32, and in mixed precision
(`--precision bf16`: bfloat16 operands for the matrix products, float32 for the rest). The four run
alternately, each in a child process, and the median seconds per epoch are compared. It also times
the recipe's matrix products alone in each dtype, the floor that no implementation with its
products in that dtype can beat here, so each ratio can be read against the best one possible. On a
GPU machine, samples/s of ours on the GPU is printed too.

    python bench/train_speed.py --data-dir ../shared/mnist [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def canonical(root: str, epochs: int, workers: int) -> None:
    """pytorch/examples vae/main.py, trimmed of image saving; prints one JSON line per epoch, with
    its train loss and, as its `test()` computes it, the test loss (nats per image)."""
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torchvision import datasets, transforms

    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, x: torch.Tensor) -> tuple:
            h1 = F.relu(self.fc1(x.view(-1, 784)))
            mu, logvar = self.fc21(h1), self.fc22(h1)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    torch.manual_seed(1)
    kwargs = {"batch_size": 128, "num_workers": workers}
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(root, train=True, transform=transforms.ToTensor()), shuffle=True, **kwargs
    )
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(root, train=False, transform=transforms.ToTensor()), shuffle=False, **kwargs
    )
    model = VAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        train_loss = 0.0
        for data, _ in train_loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in test_loader:
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
        elapsed = time.perf_counter() - start
        record = {"epoch": epoch, "seconds": elapsed, "loss": train_loss / 60000}
        print(json.dumps(record | {"test_loss": test_loss / len(test_loader.dataset)}), flush=True)


def torchvision_root(data_dir: Path, tmp: Path) -> str:
    """torchvision's MNIST layout (root/MNIST/raw, unzipped) built from a folder of IDX files."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        source = data_dir / f"{name}.gz"
        with (
            gzip.open(source) if source.exists() else open(data_dir / name, "rb") as f,
            open(raw / name, "wb") as g,
        ):
            shutil.copyfileobj(f, g)
    return str(tmp)


def run_canonical(root: str, epochs: int, workers: int) -> list[float]:
    child = [sys.executable, __file__, "--canonical-child", root]
    out = subprocess.run(
        [*child, "--epochs", str(epochs), "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line)["seconds"] for line in out.stdout.splitlines()]


def run_ours(
    data_dir: Path, epochs: int, device: str, tmp: Path, precision: str = "fp32"
) -> tuple[list[float], float]:
    """Per-epoch seconds from our metrics log (wall-time differences) and the last samples/s."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    shutil.rmtree(out)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_core",
            "train",
            "--data-dir",
            str(data_dir),
            "--arch",
            "mlp",
            "--hidden",
            "400",
            "--latent-dim",
            "20",
            "--batch-size",
            "128",
            "--lr",
            "1e-3",
            "--epochs",
            str(epochs),
            "--device",
            device,
            "--precision",
            precision,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ends = [0.0] + [r["wall_time"] for r in records if r["event"] == "epoch"]
    rate = [r["samples_per_s"] for r in records if r["event"] == "step"][-1]
    return [b - a for a, b in itertools.pairwise(ends)], rate


def matmul_floor(batch: int = 128, n: int = 60_000, repeats: int = 3, dtype: object = None) -> float:
    """Seconds per epoch of the recipe's matrix products alone (in `dtype`, float32 by default, on
    this process's threads): the forward and backward GEMMs of 784-400-(20+20)-400-784 over
    ceil(n / batch) batches. No implementation of the recipe with its products in that dtype can
    beat it on this CPU; the rest of a step is overhead."""
    import torch

    layers = [(784, 400), (400, 40), (20, 400), (400, 784)]
    weights = [torch.randn(n_out, n_in, dtype=dtype) for n_in, n_out in layers]
    inputs = [torch.randn(batch, n_in, dtype=dtype) for n_in, _ in layers]
    grads = [torch.randn(batch, n_out, dtype=dtype) for _, n_out in layers]

    def step() -> None:
        for i, (w, x, g) in enumerate(zip(weights, inputs, grads, strict=True)):
            x @ w.t()  # forward
            g.t() @ x  # weight gradient
            if i > 0:  # the input needs no gradient
                g @ w

    steps = -(-n // batch)
    for _ in range(20):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--canonical-child", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.canonical_child:
        canonical(args.canonical_child, args.epochs, args.workers)
        return

    import torch

    from vae_core.training import PRECISIONS

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.epochs} epochs x {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(args.data_dir, Path(tmp))
        theirs = {"canonical, as published": 0, "canonical, 1 loader worker": 1}  # loader workers
        ours = {f"vae_core train, {p}": p for p in PRECISIONS}
        runs: dict[str, list[float]] = {name: [] for name in theirs | ours}
        for r in range(args.rounds):
            for name, workers in theirs.items():
                runs[name] += run_canonical(root, args.epochs, workers)
            for name, precision in ours.items():
                runs[name] += run_ours(args.data_dir, args.epochs, "cpu", Path(tmp), precision)[0]
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in runs.items()),
                flush=True,
            )
        for name, seconds in runs.items():
            print(
                f"{name:28s} {statistics.median(seconds):.2f} s/epoch"
                f"  (all: {', '.join(f'{t:.2f}' for t in seconds)})"
            )
        floors = {p: matmul_floor(dtype=torch.bfloat16 if p == "bf16" else torch.float32) for p in PRECISIONS}
        for p, floor in floors.items():
            print(f"{f'matrix products alone, {p}':28s} {floor:.2f} s/epoch  (the floor for the recipe here)")
        for mine, p in ours.items():
            for name in theirs:
                a, b = runs[name], runs[mine]
                print(
                    f"{mine} over the {name}: {statistics.median(a) / statistics.median(b):.2f}x on "
                    f"medians, {min(a) / min(b):.2f}x on the fastest epochs (target >= 4x; "
                    f"{statistics.median(a) / floors[p]:.1f}x at the floor)"
                )
        if torch.cuda.is_available():
            for p in PRECISIONS:
                _, rate = run_ours(args.data_dir, args.epochs, "cuda", Path(tmp), p)
                print(f"vae_core on {torch.cuda.get_device_name()}, {p}: {rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
