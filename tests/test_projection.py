"""vae_core.projection: 2-D maps, their inverses, encodings for the Atlas page, and the disk cache."""

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_images
from vae_core import VAE, RunSpec, VAEConfig, load_checkpoint, save_checkpoint, timelapse
from vae_core import explore as ex
from vae_core import projection as pj
from vae_core.atomic import DiskFullError


@pytest.fixture
def points() -> np.ndarray:
    """200 points in 5-D from three clusters."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(3, 5))
    return (centres[rng.integers(0, 3, 200)] + rng.normal(size=(200, 5))).astype(np.float32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pca_is_reproducible_and_its_inverse_exact_on_its_plane(points):
    """PCA gives the same map every time, and inverse(coords) is each point's projection on the plane."""
    a, b = pj.project(points, "pca"), pj.project(points.copy(), "pca", seed=7)
    np.testing.assert_array_equal(a.coords, b.coords)
    flat = a.inverse(a.coords)  # (N, 5) on the plane
    np.testing.assert_allclose(pj.project(flat, "pca").coords, a.coords, atol=1e-3)
    planar = points.copy()
    planar[:, 2:] = 0
    p = pj.project(planar, "pca")
    np.testing.assert_allclose(p.inverse(p.coords), planar, atol=1e-4)
    assert a.exact_inverse


def test_every_pca_map_of_the_same_points_is_the_same_map(points):
    """The Atlas's PCA (project(method="pca")), the explorer's pca_2d + project (Interpolate, Encode)
    and the training timelapse give identical coordinates for the same points, extra points included."""
    extra = points[:20] * 0.5
    atlas = pj.project(points, "pca", extra=extra)
    mean, components = ex.pca_2d(points)
    np.testing.assert_array_equal(atlas.mean, mean)
    np.testing.assert_array_equal(atlas.components, components)
    np.testing.assert_array_equal(ex.project(points, mean, components).astype(np.float32), atlas.coords[:200])
    np.testing.assert_array_equal(ex.project(extra, mean, components).astype(np.float32), atlas.coords[200:])
    np.testing.assert_array_equal(timelapse.map_points(points)[0], atlas.coords[:200])


def test_latent_plane_is_its_own_inverse_and_only_for_2d(points):
    """The latent map of 2-D points is the points themselves; other sizes are refused with the size."""
    p = pj.project(points[:, :2], "latent")
    np.testing.assert_array_equal(p.coords, points[:, :2])
    np.testing.assert_array_equal(p.inverse([[0.5, -1.0]]), [[0.5, -1.0]])
    with pytest.raises(ValueError, match="5-D"):
        pj.project(points, "latent")


def test_bad_method_and_parameters_are_refused(points):
    """Unknown methods and parameters and bad perplexities raise ValueError."""
    with pytest.raises(ValueError, match="method must be one of"):
        pj.project(points, "isomap")
    with pytest.raises(ValueError, match="n_neighbors"):
        pj.project(points, "umap", perplexity=5)
    with pytest.raises(ValueError, match="perplexity"):
        pj.project(points[:10], "tsne", perplexity=30)
    with pytest.raises(ValueError, match=r"perplexity must be in \[1, 3\]"):
        pj.project(points[:10], "tsne", perplexity=4)  # 3 × 4 neighbours of 9 others


def test_tsne_same_seed_same_map(points):
    """t-SNE with the same seed and perplexity gives the same coordinates; its inverse is a local mean."""
    a = pj.project(points[:80], "tsne", seed=1, perplexity=10)
    b = pj.project(points[:80], "tsne", seed=1, perplexity=10)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape == (80, 2) and not a.exact_inverse


def test_tsne_places_extra_points_without_moving_the_fitted_map(points):
    """t-SNE places extra points on the map it fitted: the fitted rows are those of the map without
    them, the same for a seed, and an extra point lands near the fitted copy of itself."""
    alone = pj.project(points[:150], "tsne", seed=2, perplexity=10)
    both = pj.project(points[:150], "tsne", seed=2, perplexity=10, extra=points[:50])
    again = pj.project(points[:150], "tsne", seed=2, perplexity=10, extra=points[:50])
    np.testing.assert_array_equal(both.coords[:150], alone.coords)
    np.testing.assert_array_equal(both.coords, again.coords)
    assert both.coords.shape == (200, 2) and both.points.shape == (200, 5)
    spread = np.ptp(alone.coords, axis=0).max()
    assert np.median(np.linalg.norm(both.coords[150:] - alone.coords[:50], axis=1)) < 0.1 * spread


def test_tsne_reports_progress_and_stops_when_asked(points):
    """The progress callback is told a rising fraction that ends at 1; returning True raises Cancelled
    at the next report, long before the end."""
    told = []
    pj.project(points[:80], "tsne", seed=1, perplexity=10, progress=told.append)
    assert told == sorted(told) and told[-1] == 1.0 and len(told) > 10
    assert told[0] == pytest.approx(pj.TSNE_REPORT_EVERY / sum(pj.TSNE_ITERATIONS))
    calls = []
    with pytest.raises(pj.Cancelled, match="cancelled after"):
        pj.project(points[:80], "tsne", seed=1, perplexity=10, progress=lambda f: calls.append(f) or f > 0.2)
    assert 0.2 < calls[-1] < 0.3


def test_neighbour_inverse_is_a_weighted_mean_of_nearby_latents():
    """At a point's own position the inverse returns (almost) that point's latent; halfway between two
    groups of INVERSE_K / 2 points it returns the mean of their latents."""
    half = pj.INVERSE_K // 2
    coords = np.array([[0, 0], [10, 0]] * half, np.float32) + np.repeat(np.arange(half), 2)[:, None] * 1e-3
    points = np.where(coords[:, :1] > 5, 1.0, -1.0) * np.ones((2 * half, 3), np.float32)
    p = pj.Projection("umap", coords, points)
    np.testing.assert_allclose(p.inverse(coords[:1])[0], points[0], atol=1e-3)
    assert np.all(np.abs(p.inverse([[5, 0]])) < 1)


@pytest.mark.slow
def test_umap_same_seed_same_map_and_places_extra_points(points):
    """UMAP (after a numba compile) is reproducible with a seed and transforms extra points."""
    a = pj.project(points[:150], "umap", seed=3, n_neighbors=10, extra=points[150:])
    b = pj.project(points[:150], "umap", seed=3, n_neighbors=10, extra=points[150:])
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape == (200, 2) and a.points.shape == (200, 5)


def test_projection_round_trips_through_its_arrays(points):
    """from_arrays(arrays()) rebuilds the same map and the same inverse."""
    p = pj.project(points, "pca")
    q = pj.Projection.from_arrays("pca", p.arrays(), points)
    np.testing.assert_array_equal(q.inverse([[1.0, 2.0]]), p.inverse([[1.0, 2.0]]))


def test_in_box_worst_and_lattice():
    """in_box takes ranges in either order; worst is largest first; the lattice covers every point."""
    coords = np.array([[0, 0], [1, 1], [2, 2], [3, -1]], np.float32)
    assert pj.in_box(coords, (2.5, 0.5), (0, 3)).tolist() == [1, 2]
    assert pj.worst(np.array([1.0, 5.0, 5.0, 2.0]), 3).tolist() == [1, 2, 3]
    cells = pj.lattice(coords, 4)
    assert len(cells["cx"]) == 16
    assert cells["x"].min() < 0 and cells["x2"].max() > 3 and cells["y"].min() < -1 and cells["y2"].max() > 2


def test_data_uris_are_pngs_of_the_images():
    """Each data URI is a PNG of the same size as its image."""
    images = synthetic_images(3).images.numpy()
    uris = pj.data_uris(images)
    png = base64.b64decode(uris[0].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == (28, 28)
    assert pj.data_uris(images[:, 0] / 255.0).tolist() == uris.tolist()


def test_cache_computes_once_and_checks_the_key(cache):
    """cached() computes on a miss only, writes .npz under $VAE_CACHE_DIR, and is_cached says so."""
    calls = []

    def compute():
        calls.append(1)
        return {"coords": np.arange(6.0).reshape(3, 2)}

    assert not pj.is_cached("k")
    first, second = pj.cached("k", compute), pj.cached("k", compute)
    np.testing.assert_array_equal(first["coords"], second["coords"])
    assert len(calls) == 1 and pj.is_cached("k") and list(cache.glob("*.npz"))
    assert pj.cache_dir() == cache


def test_cache_write_that_fails_leaves_no_file_behind(cache, monkeypatch):
    """A cache write that fails (here a full disk) raises DiskFullError and leaves neither a cache file
    nor a temporary one, so the next call computes again."""

    def full_disk(file, **arrays):
        file.write(b"half an archive")
        raise OSError(28, "No space left on device")

    savez = np.savez
    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(DiskFullError, match="disk is full"):
        pj.cached("key", lambda: {"a": np.arange(3)})
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(np, "savez", savez)  # the disk has room again; the cache folder stays the test's
    assert not pj.is_cached("key")
    np.testing.assert_array_equal(pj.cached("key", lambda: {"a": np.arange(3)})["a"], np.arange(3))


def test_cache_key_follows_the_checkpoint_file_and_sorts_parameters(tmp_path):
    """The key holds the model file and its mtime; parameters in any order give the same key."""
    path = tmp_path / "ckpt"
    model = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    save_checkpoint(path, model, spec=RunSpec(model=model.config), metrics={}, epoch=0, step=0)
    a = pj.cache_key(path, "test", "umap", min_dist=0.1, n_neighbors=15)
    assert a == pj.cache_key(path / "model.pt", "test", "umap", n_neighbors=15, min_dist=0.1)
    os.utime(path / "model.pt", ns=(1, 1))
    assert pj.cache_key(path, "test", "umap", min_dist=0.1, n_neighbors=15) != a
    assert load_checkpoint(path).config.latent_dim == 2


def test_warm_up_runs_once_in_a_daemon_thread(monkeypatch):
    """warm_up_umap starts one daemon thread and returns it on every call."""
    calls = []
    monkeypatch.setattr(pj, "_tiny_umap", lambda: calls.append(1))
    monkeypatch.setattr(pj, "_warm_up_thread", None)
    thread = pj.warm_up_umap()
    assert pj.warm_up_umap() is thread and thread.daemon
    thread.join()
    assert calls == [1]
