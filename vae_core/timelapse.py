"""The latent timelapse: after every epoch, a snapshot of what the latent space looks like.

`python -m vae_core train --timelapse` calls `snapshot` after each epoch's checkpoint with a fixed
subset of the test set (its first `N_IMAGES` model inputs). Each snapshot is one file,

    OUT/timelapse/epoch_0001.npz   grid (n, n, H, W) uint8, axis (n,), points (N, 2), labels (N,), ...

written atomically, so a page following a run never reads half a file. `load_timelapse` reads them
back in epoch order. The grid decodes prior quantiles of z[0], z[1] with the other dimensions at 0;
the map holds posterior means: raw for a 2-D latent space, else on their first two principal axes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_core import explore as ex
from vae_core.atomic import atomic_write_bytes
from vae_core.model import VAE

N_IMAGES = 1000  # test images on each map: enough to see the classes separate
GRID = 15  # decoded cells per side
FOLDER = "timelapse"


@dataclass(frozen=True)
class Snapshot:
    """The latent space after one epoch: a decoded grid and the map of the fixed test subset."""

    epoch: int
    grid: np.ndarray  # (n, n, H, W) uint8, or (1, n, H, W) for a 1-D latent space
    axis: np.ndarray  # (n,) z values of the grid's columns (and rows, top = largest)
    points: np.ndarray  # (N, 2) float32 map coordinates
    labels: np.ndarray  # (N,) int64
    projection: str  # "raw" (the latent dims themselves) or "pca" (first two principal axes)

    @property
    def images(self) -> np.ndarray:
        """The grid as display images in [0, 1]."""
        return self.grid.astype(np.float32) / 255

    @property
    def axis_titles(self) -> tuple[str, str]:
        return ("z[0]", "z[1]") if self.projection == "raw" else ("PC 1 of μ", "PC 2 of μ")


def path(out: str | Path, epoch: int) -> Path:
    return Path(out) / FOLDER / f"epoch_{epoch:04d}.npz"


def decoded_grid(model: VAE, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Decode prior quantiles of z[0] (and z[1]), others at 0: (uint8 images (rows, n, H, W), axis (n,))."""
    if model.config.latent_dim == 1:
        axis = ex.grid_axis(n)
        images = ex.decode_images(model, axis[:, None])[None]  # (1, n, H, W)
    else:
        images, axis = ex.latent_grid(model, n)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), axis


def map_points(mu: np.ndarray) -> tuple[np.ndarray, str]:
    """Posterior means (N, D) -> 2-D map coordinates and how they were made.

    Principal axes get a fixed sign (largest loading positive) so that the map does not mirror
    from one epoch to the next only because SVD picked the other sign.
    """
    if mu.shape[1] <= 2:
        return np.pad(mu, ((0, 0), (0, 2 - mu.shape[1]))).astype(np.float32), "raw"
    mean, components = ex.pca_2d(mu)
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(1)])
    return ex.project(mu, mean, components * signs[:, None]).astype(np.float32), "pca"


@torch.no_grad()
def snapshot(model: VAE, x: torch.Tensor, labels: torch.Tensor, out: Path, epoch: int) -> Path:
    """Write OUT/timelapse/epoch_NNNN.npz for the model after `epoch`; x: (N, C, H, W) model inputs."""
    grid, axis = decoded_grid(model)
    points, projection = map_points(ex.encode_means(model, x))
    file = path(out, epoch)
    _atomic_savez(
        file,
        epoch=np.int64(epoch),
        grid=grid,
        axis=axis.astype(np.float32),
        points=points,
        labels=labels.cpu().numpy().astype(np.int64),
        projection=np.array(projection),
    )
    return file


def _atomic_savez(file: Path, **arrays: np.ndarray) -> None:
    """np.savez through the one atomic writer: readers see all of the file or nothing."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(file, buffer.getvalue())


def epochs(out: str | Path) -> list[int]:
    """The epochs that have a snapshot, ascending (cheap: lists file names only)."""
    return sorted(int(f.stem.removeprefix("epoch_")) for f in (Path(out) / FOLDER).glob("epoch_*.npz"))


def load_snapshot(out: str | Path, epoch: int) -> Snapshot:
    """The snapshot of one epoch."""
    with np.load(path(out, epoch), allow_pickle=False) as f:
        return Snapshot(
            epoch=int(f["epoch"]),
            grid=f["grid"],
            axis=f["axis"],
            points=f["points"],
            labels=f["labels"],
            projection=str(f["projection"]),
        )


def load_timelapse(out: str | Path) -> list[Snapshot]:
    """Every snapshot of a run folder, sorted by epoch ([] when there are none yet)."""
    return [load_snapshot(out, epoch) for epoch in epochs(out)]
