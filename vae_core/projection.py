"""Projections of encoded images to a 2-D map (PCA, UMAP, t-SNE, or the latent plane itself), the way
back from a map position to a latent point, and an on-disk cache of both encodings and maps.

Everything is NumPy in, NumPy out; no Streamlit. The same points, method, parameters and seed always
give the same map. Cache files are `.npz` archives read with `allow_pickle=False`, named by a hash of a
plain key string (checkpoint file, its mtime, split, method, sorted parameters) that is stored inside
and checked on reading. UMAP is imported lazily: importing it is slow, and its numba kernels compile
on first use (tens of seconds on a small CPU), which `warm_up_umap` does once in a background thread.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from vae_core import explore as ex
from vae_core import onnx_model
from vae_core.atomic import atomic_write
from vae_core.data import PROJECT_ROOT
from vae_core.evaluation import eval_inputs, score
from vae_core.explore import to_png
from vae_core.model import VAE

METHODS = ("pca", "umap", "tsne", "latent")
DEFAULTS: dict[str, dict[str, float]] = {
    "pca": {},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200},
    "tsne": {"perplexity": 30.0},
    "latent": {},
}
_DATA_URI = "data:image/png;base64,"
INVERSE_K = 8  # neighbours averaged to map a UMAP / t-SNE position back to latent space
TSNE_ITERATIONS = (250, 500)  # early exaggeration, then the rest: openTSNE's default schedule
TSNE_PLACE_ITERATIONS = 250  # openTSNE's default for placing new points on a fitted map
TSNE_REPORT_EVERY = 25  # iterations between progress reports (each one also computes the KL)
Progress = Callable[[float], bool | None]  # told the fraction done in [0, 1]; returning True cancels

__all__ = [
    "DEFAULTS",
    "INVERSE_K",
    "METHODS",
    "Cancelled",
    "Progress",
    "Projection",
    "cache_dir",
    "cache_key",
    "cached",
    "data_uris",
    "in_box",
    "is_cached",
    "lattice",
    "project",
    "warm_up_umap",
    "worst",
]


class Cancelled(RuntimeError):
    """A projection stopped because its progress callback asked to (returned True)."""


@dataclass(frozen=True)
class Projection:
    """A 2-D map of `points` (N, D): coords (N, 2), and what is needed to go back to latent space.

    PCA keeps its mean (D,) and components (2, D): the inverse is exact on the plane they span. The latent
    plane of a 2-D model is its own inverse. UMAP and t-SNE have no inverse that can be stored as arrays;
    there a position maps to the distance-weighted mean latent of its `INVERSE_K` nearest points.
    """

    method: str
    coords: np.ndarray  # (N, 2)
    points: np.ndarray = field(repr=False)  # (N, D)
    mean: np.ndarray | None = None  # (D,), PCA only
    components: np.ndarray | None = None  # (2, D), PCA only

    @property
    def exact_inverse(self) -> bool:
        return self.method in ("pca", "latent")

    def inverse(self, coords2d: np.ndarray) -> np.ndarray:
        """Map positions (M, 2) back to latent points (M, D)."""
        coords2d = np.atleast_2d(np.asarray(coords2d, np.float64))
        if self.method == "latent":
            return coords2d.astype(np.float32)
        if self.method == "pca":
            return (self.mean + coords2d @ self.components).astype(np.float32)
        return self._neighbour_mean(coords2d)

    def _neighbour_mean(self, coords2d: np.ndarray) -> np.ndarray:
        from scipy.spatial import cKDTree

        k = min(INVERSE_K, len(self.coords))
        distance, index = cKDTree(self.coords).query(coords2d, k=k)  # (M, k) each
        weights = 1.0 / (np.reshape(distance, (len(coords2d), k)) + 1e-6)
        weights /= weights.sum(1, keepdims=True)
        return np.einsum("mk,mkd->md", weights, self.points[np.reshape(index, (len(coords2d), k))]).astype(
            np.float32
        )

    @classmethod
    def from_arrays(cls, method: str, arrays: dict[str, np.ndarray], points: np.ndarray) -> Projection:
        """A projection read back from `arrays()`, over the same points it was fitted on (and placed)."""
        return cls(
            method,
            arrays["coords"],
            np.asarray(points, np.float32),
            arrays.get("mean"),
            arrays.get("components"),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """What the disk cache stores (the points themselves are cached with the encoding)."""
        extra = {} if self.mean is None else {"mean": self.mean, "components": self.components}
        return {"coords": self.coords, **extra}


def check_params(method: str, params: dict) -> dict:
    """The method's parameters, defaults filled in; unknown methods or parameters are refused."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    unknown = set(params) - set(DEFAULTS[method])
    if unknown:
        raise ValueError(
            f"{method} takes {sorted(DEFAULTS[method]) or 'no parameters'}, got {sorted(unknown)}"
        )
    return {**DEFAULTS[method], **params}


def project(
    points: np.ndarray,
    method: str,
    *,
    seed: int = 0,
    extra: np.ndarray | None = None,
    progress: Progress | None = None,
    **params: float,
) -> Projection:
    """Fit a 2-D map of points (N, D); `extra` points (M, D) are placed on it too (coords rows N..N+M).

    Extra points are transformed, not fitted: the map of the N points is the same with or without
    them. `progress`, if given, is told the fraction done (t-SNE every TSNE_REPORT_EVERY iterations,
    the others once at the end); when it returns True the fit stops with `Cancelled`.
    """
    params = check_params(method, params)
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or len(points) < 3:
        raise ValueError(f"points must be (N >= 3, D), got shape {points.shape}")
    if method == "latent" and points.shape[1] != 2:
        raise ValueError(
            f"the latent plane is a map only for 2-D models; these points are {points.shape[1]}-D"
        )
    extra = np.asarray(extra, np.float32) if extra is not None else None
    fit = {"pca": _pca, "umap": _umap, "tsne": functools.partial(_tsne, progress=progress), "latent": _latent}
    everything = points if extra is None else np.concatenate([points, extra])
    coords, inverse = fit[method](points, extra, seed, **params)
    if progress is not None and progress(1.0):
        raise Cancelled(f"{method} cancelled at its end")
    return Projection(method, coords.astype(np.float32), everything, **inverse)


def _latent(points: np.ndarray, extra: np.ndarray | None, seed: int) -> tuple[np.ndarray, dict]:
    return (points if extra is None else np.concatenate([points, extra])), {}


def _pca(points: np.ndarray, extra: np.ndarray | None, seed: int) -> tuple[np.ndarray, dict]:
    mean, components = ex.pca_2d(points)  # the explorer's one PCA, with its sign rule
    everything = points if extra is None else np.concatenate([points, extra])
    return ex.project(everything, mean, components), {"mean": mean, "components": components}


def _umap(
    points: np.ndarray,
    extra: np.ndarray | None,
    seed: int,
    *,
    n_neighbors: float,
    min_dist: float,
    n_epochs: float,
) -> tuple[np.ndarray, dict]:
    umap = _import_umap()
    # PCA initialisation and 200 epochs (UMAP's default above 10k points) take a fraction of the time of
    # spectral init and 500 epochs (bench/atlas_speed.py). A seed makes UMAP single-threaded; n_jobs=1
    # says so (UMAP warns otherwise).
    reducer = umap.UMAP(
        n_neighbors=int(n_neighbors), min_dist=float(min_dist), n_epochs=int(n_epochs),
        init="pca", random_state=int(seed), n_jobs=1,
    )  # fmt: skip
    coords = reducer.fit_transform(points)
    return (coords if extra is None else np.concatenate([coords, reducer.transform(extra)])), {}


def _import_umap() -> ModuleType:
    """umap, imported lazily (seconds), without its ImportWarning that TensorFlow is absent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)
        import umap
    return umap


def _tsne(
    points: np.ndarray,
    extra: np.ndarray | None,
    seed: int,
    *,
    perplexity: float,
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict]:
    """openTSNE's t-SNE with its default schedule (TSNE_ITERATIONS) and gradient method ("auto":
    Barnes-Hut below 10,000 points, FFT-accelerated from there), one thread so that a seed gives the
    same map; `extra` points are placed on the fitted map by its `transform`."""
    from openTSNE import TSNE

    if not 1 <= perplexity <= (len(points) - 1) / 3:  # openTSNE looks at 3 × perplexity neighbours
        raise ValueError(
            f"t-SNE perplexity must be in [1, {(len(points) - 1) / 3:g}] for {len(points)} points "
            f"(it looks at 3 × perplexity neighbours), got {perplexity}"
        )
    steps = sum(TSNE_ITERATIONS) + (TSNE_PLACE_ITERATIONS if extra is not None else 0)
    done = 0

    def report(iteration: int, error: float, embedding: np.ndarray) -> None:
        nonlocal done
        done += TSNE_REPORT_EVERY
        if progress is not None and progress(min(done / steps, 1.0)):
            raise Cancelled(f"t-SNE cancelled after {done} of {steps} iterations")

    early, rest = TSNE_ITERATIONS
    tsne = TSNE(
        perplexity=float(perplexity), early_exaggeration_iter=early, n_iter=rest, initialization="pca",
        negative_gradient_method="auto", random_state=int(seed), n_jobs=1, callbacks=report,
        callbacks_every_iters=TSNE_REPORT_EVERY,
    )  # fmt: skip
    embedding = tsne.fit(points)
    coords = np.array(embedding)  # a copy: openTSNE's transform moves the fitted points a little
    if extra is not None:
        placed = embedding.transform(extra, n_iter=TSNE_PLACE_ITERATIONS)
        coords = np.concatenate([coords, np.asarray(placed)])
    return coords, {}


# ---------------------------------------------------------------- encoding and highlights


def data_uris(images: np.ndarray) -> np.ndarray:
    """Display images (N, H, W) or (N, H, W, 3) in [0, 1], or stored uint8 (N, C, H, W) with C 1 or 3
    -> PNG data URIs (N,) of str, for tooltips."""
    images = np.asarray(images)
    if images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] in (1, 3):  # stored (N, C, H, W)
        images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)  # to_png takes uint8
    return np.array([_DATA_URI + base64.b64encode(to_png(image)).decode() for image in images])


def lattice(coords: np.ndarray, n: int, *, margin: float = 0.05) -> dict[str, np.ndarray]:
    """n × n cells covering points (N, 2) plus a margin: edges x, x2, y, y2 and centres cx, cy, each (n²,)."""
    lo, hi = coords.min(0), coords.max(0)
    lo, hi = lo - margin * (hi - lo), hi + margin * (hi - lo)
    ex, ey = (np.linspace(lo[d], hi[d], n + 1) for d in (0, 1))
    ix, iy = (i.ravel() for i in np.meshgrid(np.arange(n), np.arange(n)))
    x, x2, y, y2 = ex[ix], ex[ix + 1], ey[iy], ey[iy + 1]
    return {"x": x, "x2": x2, "y": y, "y2": y2, "cx": (x + x2) / 2, "cy": (y + y2) / 2}


def worst(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values, largest first (ties broken by index, so always the same)."""
    return np.argsort(-np.asarray(values), kind="stable")[:n]


def in_box(coords: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
    """Indices of the points (N, 2) inside a box, given its x and y ranges in either order."""
    (x0, x1), (y0, y1) = sorted(x_range), sorted(y_range)
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    return np.flatnonzero(inside)


# ---------------------------------------------------------------- disk cache


def cache_dir() -> Path:
    """$VAE_CACHE_DIR, else the project's .cache/atlas (git-ignored)."""
    return Path(os.environ.get("VAE_CACHE_DIR") or PROJECT_ROOT / ".cache" / "atlas")


def cache_key(checkpoint: str | Path, *parts: object, **params: object) -> str:
    """A plain key: the checkpoint's model file (an ONNX folder's three files) and mtime, then the
    parts, then sorted parameters."""
    file = Path(checkpoint)
    names = onnx_model.FILES if onnx_model.is_onnx_folder(file) else ("model.pt",)
    files = [file / name for name in names] if file.is_dir() else [file]
    items = [*(f"{f.resolve()}@{f.stat().st_mtime_ns}" for f in files), *map(str, parts)]
    items += [f"{k}={params[k]!r}" for k in sorted(params)]
    return "|".join(items)


def _cache_file(key: str) -> Path:
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def is_cached(key: str) -> bool:
    """Whether `cached(key, ...)` would read from disk (a file under the key's name exists)."""
    return _cache_file(key).is_file()


def cached(key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under `key`, computed and written atomically the first time."""
    file = _cache_file(key)
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as stored:
                if str(stored["_key"]) == key:
                    return {name: stored[name] for name in stored.files if name != "_key"}
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: recompute and overwrite
    arrays = compute()
    atomic_write(file, lambda f: np.savez(f, _key=np.array(key), **arrays))
    return arrays


# ---------------------------------------------------------------- numba warm-up

_warm_up_lock = threading.Lock()
_warm_up_thread: threading.Thread | None = None


def _tiny_umap() -> None:
    """Fit and transform 200 random points along the code path of a real map: the approximate
    nearest-neighbour search (real maps have thousands of points) and the layout, then `transform`."""
    umap = _import_umap()
    points = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    reducer = umap.UMAP(
        n_neighbors=5, n_epochs=5, init="pca", random_state=0, n_jobs=1, force_approximation_algorithm=True
    )
    reducer.fit(points[:150])
    reducer.transform(points[150:])


def warm_up_umap() -> threading.Thread:
    """Import UMAP and compile its numba kernels once, in a daemon thread; returns that thread.

    Call at app start: the first real map then skips the compilation. Later calls return
    the same thread (join it to wait for the warm-up).
    """
    global _warm_up_thread
    with _warm_up_lock:
        if _warm_up_thread is None:
            _warm_up_thread = threading.Thread(target=_tiny_umap, name="umap-warm-up", daemon=True)
            _warm_up_thread.start()
        return _warm_up_thread


# ---------------------------------------------------------------- per-image scores shared by every page

SCORE_FIELDS = ("mu", "logvar", "recon", "kl", "elbo")


def model_inputs(images: np.ndarray, binarize: str) -> torch.Tensor:
    """Stored uint8 images (N, C, H, W) -> the model's test inputs (N, C, H, W) in [0, 1], as in
    evaluation (binarised once, seeded, for `dynamic` models). A read-only array is copied, not changed."""
    return eval_inputs(torch.from_numpy(np.array(images)), binarize)


def score_inputs(model: VAE, x: torch.Tensor, *, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """One seeded `vae_core.score` of model inputs x (N, C, H, W), as NumPy arrays named SCORE_FIELDS:
    mu and logvar (N, D), recon, kl and elbo (N,), in nats per image."""
    scores = score(model, x, batch_size=batch_size)
    return {
        "mu": scores.mu.numpy(),
        "logvar": scores.logvar.numpy(),
        "recon": scores.recon.numpy(),
        "kl": scores.kl.numpy(),
        "elbo": scores.elbo.numpy(),
    }


def score_images(model: VAE, images: np.ndarray, binarize: str, *, batch_size: int = 1000) -> dict:
    """`score_inputs` of stored uint8 images (N, C, H, W) made into the model's test inputs."""
    return score_inputs(model, model_inputs(images, binarize), batch_size=batch_size)


def cached_scores(key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`cached` for the arrays of `score_inputs`: a file written before all SCORE_FIELDS were stored
    is recomputed and replaced."""
    arrays = cached(key, compute)
    if set(SCORE_FIELDS) <= arrays.keys():
        return arrays
    _cache_file(key).unlink(missing_ok=True)
    return cached(key, compute)
