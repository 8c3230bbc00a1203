"""The latent timelapse: one atomic snapshot per epoch, read back in order, maps from posterior means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import synthetic_images
from vae_core import VAE, VAEConfig, eval_inputs, timelapse
from vae_core import explore as ex


@pytest.fixture
def subset() -> tuple[torch.Tensor, torch.Tensor]:
    test = synthetic_images(50, seed=1, split="test")
    return eval_inputs(test, "none"), test.labels


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_snapshots_round_trip_in_epoch_order(tmp_path: Path, subset, latent_dim: int) -> None:
    """Snapshots written out of order load sorted by epoch, with a uint8 grid, 2-D points and labels."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=latent_dim, hidden=(16,))).eval()
    x, labels = subset
    for epoch in (2, 1, 10):
        assert timelapse.snapshot(model, x, labels, tmp_path, epoch) == timelapse.path(tmp_path, epoch)
    snapshots = timelapse.load_timelapse(tmp_path)
    assert [s.epoch for s in snapshots] == [1, 2, 10]
    s = snapshots[0]
    rows = 1 if latent_dim == 1 else timelapse.GRID
    assert s.grid.dtype == np.uint8 and s.grid.shape == (rows, timelapse.GRID, 28, 28)
    assert s.points.shape == (50, 2) and np.array_equal(s.labels, labels.numpy())
    assert s.projection == ("pca" if latent_dim > 2 else "raw")
    assert s.images.min() >= 0 and s.images.max() <= 1
    assert not list(tmp_path.joinpath("timelapse").glob("*.tmp"))


def test_grid_and_map_match_the_explorer(subset) -> None:
    """The grid is the explorer's quantile grid, and a 2-D map holds the raw posterior means."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,))).eval()
    grid, axis = timelapse.decoded_grid(model)
    images, expected_axis = ex.latent_grid(model, timelapse.GRID)
    assert np.allclose(axis, expected_axis) and np.abs(grid / 255 - images).max() <= 0.5 / 255 + 1e-6
    x, _ = subset
    points, projection = timelapse.map_points(ex.encode_means(model, x))
    assert projection == "raw" and np.allclose(points, ex.encode_means(model, x))


def test_pca_map_is_the_explorers_projection_with_a_fixed_sign() -> None:
    """The map is mu on its first two principal axes, with a sign that does not depend on image order."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(200, 6)) * np.array([5, 3, 1, 0.5, 0.1, 0.1])
    points, projection = timelapse.map_points(mu)
    expected = ex.project(mu, *ex.pca_2d(mu))
    assert projection == "pca"
    np.testing.assert_array_equal(points, expected.astype(np.float32))  # the explorer's map, same sign
    order = rng.permutation(200)
    assert np.allclose(timelapse.map_points(mu[order])[0], points[order], atol=1e-4)


def test_a_snapshot_that_fails_to_write_leaves_the_previous_one(
    tmp_path: Path, subset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewriting an epoch's snapshot on a full disk raises, keeps the old file whole and leaves no
    temporary file in the timelapse folder."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,))).eval()
    x, labels = subset
    file = timelapse.snapshot(model, x, labels, tmp_path, 1)
    before = file.read_bytes()

    def full_disk(f, **arrays):
        f.write(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="disk is full"):
        timelapse.snapshot(model, x, labels, tmp_path, 1)
    assert file.read_bytes() == before
    assert [f.name for f in file.parent.iterdir()] == [file.name]


def test_missing_folder_is_an_empty_timelapse(tmp_path: Path) -> None:
    """A run with no snapshots yet has an empty timelapse, not an error."""
    assert timelapse.load_timelapse(tmp_path) == []
