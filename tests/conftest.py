"""Shared fixtures: small synthetic datasets, tiny models, the real MNIST when it is present, and a
recorder of the runs the app starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from vae_core import ImageSet, VAEConfig, jobs, load_images
from vae_core.data import locate
from vae_core.records import Outcome, write_outcome

# Test processes and the servers they start skip the app's background numba warm-up (30-40 s of a
# core each); the Atlas page still compiles UMAP on demand, and its own tests cover that.
os.environ.setdefault("VAE_WARM_UP_UMAP", "0")

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "mnist"
# Without data/mnist, let the app and library find the shared IDX files as $VAE_DATA_DIR/mnist.
if not locate("mnist", "test") and SHARED_MNIST.is_dir():
    os.environ.setdefault("VAE_DATA_DIR", str(SHARED_MNIST.parent))


def synthetic_images(n: int, seed: int = 0, name: str = "mnist", split: str = "train") -> ImageSet:
    """n blurry-blob 28x28 uint8 images with labels 0-9: enough structure for a VAE to learn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cx = 6 + 1.6 * labels.float() + torch.randn(n, generator=g)
    cy = 14 + 3 * torch.randn(n, generator=g)
    blob = torch.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 18)
    images = (255 * blob).round().to(torch.uint8).unsqueeze(1)
    return ImageSet(name, split, images, labels)


@pytest.fixture
def tiny_data() -> tuple[ImageSet, ImageSet]:
    return synthetic_images(512, seed=0), synthetic_images(128, seed=1, split="test")


@pytest.fixture(
    params=[
        VAEConfig(arch="mlp", latent_dim=2, hidden=(32,)),
        VAEConfig(arch="mlp", latent_dim=5, hidden=(64, 32), activation="tanh"),
        VAEConfig(arch="conv", latent_dim=3, hidden=(8, 16)),
        VAEConfig(arch="conv", latent_dim=1, hidden=(4, 8, 8), activation="elu"),
    ],
    ids=["mlp-2d", "mlp-deep", "conv", "conv-3-layers"],
)
def config(request: pytest.FixtureRequest) -> VAEConfig:
    return request.param


@pytest.fixture(scope="session")
def mnist_test() -> ImageSet:
    """The real MNIST test set from ../shared/mnist (or data/mnist); skipped when absent."""
    if SHARED_MNIST.is_dir():
        return load_images("mnist", "test", SHARED_MNIST)
    if locate("mnist", "test"):
        return load_images("mnist", "test", download=False)
    pytest.skip("MNIST IDX files not found in ../shared/mnist or data/mnist")


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The trainer flags of every run the app starts, in a runs folder of tmp_path; no trainer runs:
    each "launch" writes a stopped outcome and returns an ended process."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    flags_seen: list[list[str]] = []
    ended = subprocess.Popen(["true"])
    ended.wait()

    def record(folder: Path, flags: list[str]) -> tuple[int, list[str]]:
        flags_seen.append(flags)
        write_outcome(folder, Outcome("stopped", "stopped by the test"))  # a trainer that has ended
        return ended.pid, ["python", "-m", "vae_core", "train", *flags]

    monkeypatch.setattr(jobs, "_launch", record)
    return flags_seen
