"""The maths behind the explorer: decoding grids, samples, paths and arithmetic in latent space.

Everything takes and returns NumPy arrays (z as (N, latent_dim) float, images as (N, H, W) floats in
[0, 1] for grey models, (N, H, W, 3) for colour ones) so that the app's pages only wire widgets to
these functions. A decoded image is the model's `likelihood.mean` of the decoder's output (Bernoulli:
sigmoid(logits); logistic: the location), for display only; no function here scores a model (that
is `vae_core.evaluation`).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vae_core.model import VAE
from vae_core.objective import reparameterize

SPACINGS = ("quantile", "range")
METHODS = ("linear", "slerp")

__all__ = [
    "METHODS",
    "SPACINGS",
    "colorize",
    "decode_images",
    "encode_means",
    "error_heat",
    "from_display",
    "grid_axis",
    "grid_latents",
    "interpolate",
    "kl_order",
    "latent_arithmetic",
    "latent_grid",
    "nearest",
    "pca_2d",
    "percentile_of",
    "project",
    "reconstruct",
    "sample_posterior",
    "sample_prior",
    "sigma_ellipse",
    "slice_point",
    "tile",
    "to_display",
    "to_gif",
    "to_images",
    "to_pixels",
    "to_png",
    "uint8_images",
]


def _as_tensor(a: np.ndarray | Sequence[float]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _channels_last(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) for grey images, (N, H, W, C) for colour."""
    images = images.cpu().numpy()
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def to_images(x: torch.Tensor) -> np.ndarray:
    """Model inputs (N, C, H, W) in [0, 1] -> display images (N, H, W), or (N, H, W, 3) for colour."""
    return _channels_last(x.float())


@torch.no_grad()
def decode_images(model: VAE, z: np.ndarray | Sequence[float]) -> np.ndarray:
    """z: (N, latent_dim), or one (latent_dim,) vector -> images (N, H, W) (or (N, H, W, 3)) in
    [0, 1], the likelihood's mean, in one call."""
    z = _as_tensor(z)
    z = z[None] if z.ndim == 1 else z
    return _channels_last(model.likelihood.mean(model.decode(z.to(model.device))))


@torch.no_grad()
def encode_means(model: VAE, x: torch.Tensor, *, batch_size: int = 2000) -> np.ndarray:
    """Posterior means mu of x (N, C, H, W) in [0, 1]: (N, latent_dim). The map uses these, not samples."""
    parts = [
        model.encode(x[i : i + batch_size].to(model.device))[0].cpu() for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy()


@torch.no_grad()
def reconstruct(model: VAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Decode the posterior mean of each image: (reconstructions, |x - x_hat| error maps), each
    (N, H, W), or (N, H, W, 3) for colour; x_hat is the likelihood's mean."""
    mu, _ = model.encode(x.to(model.device))
    x_hat = model.likelihood.mean(model.decode(mu)).cpu()
    return _channels_last(x_hat), _channels_last((x.float().cpu() - x_hat).abs())


def sample_prior(model: VAE, n: int, *, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """n latent vectors z ~ N(0, temperature² I) from a seeded generator: (n, latent_dim)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    generator = torch.Generator().manual_seed(int(seed))
    return (temperature * torch.randn(n, model.config.latent_dim, generator=generator)).numpy()


def grid_axis(n: int, *, spacing: str = "quantile", extent: float = 0.9) -> np.ndarray:
    """n ascending values along one latent axis.

    quantile: Φ⁻¹ of n evenly spaced probabilities covering the central `extent` of the prior mass
    (extent 0.9 -> Φ⁻¹(0.05) ... Φ⁻¹(0.95)); range: n evenly spaced values in [-extent, extent].
    """
    if n < 1:
        raise ValueError(f"a grid needs n >= 1 cells per side, got {n}")
    if spacing == "quantile":
        if not 0 < extent < 1:
            raise ValueError(f"quantile spacing needs 0 < extent < 1 (prior mass covered), got {extent}")
        p = torch.linspace(0.5 - extent / 2, 0.5 + extent / 2, n, dtype=torch.float64)
        return torch.special.ndtri(p).numpy()
    if spacing == "range":
        if extent <= 0:
            raise ValueError(f"range spacing needs extent > 0, got {extent}")
        return np.linspace(-extent, extent, n)
    raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")


def slice_point(
    base: np.ndarray | Sequence[float], dims: tuple[int, int], values: tuple[float, float]
) -> np.ndarray:
    """A copy of `base` (latent_dim,) with z[dims[0]], z[dims[1]] set to `values`."""
    z = np.array(base, dtype=np.float32)
    if dims[0] == dims[1] or max(dims) >= len(z) or min(dims) < 0:
        raise ValueError(f"dims must be two different dimensions below {len(z)}, got {dims}")
    z[list(dims)] = values
    return z


def grid_latents(
    axis: np.ndarray, *, latent_dim: int, dims: tuple[int, int] = (0, 1), base: np.ndarray | None = None
) -> np.ndarray:
    """z of every grid cell: (n, n, latent_dim); cell [row, col] has z[dims] = (axis[col], axis[-1 - row]).

    Rows run from high to low along dims[1] so that the tiled image reads like a plot.
    """
    base = np.zeros(latent_dim, np.float32) if base is None else np.asarray(base, np.float32)
    n = len(axis)
    z = np.broadcast_to(slice_point(base, dims, (0.0, 0.0)), (n, n, latent_dim)).copy()
    z[:, :, dims[0]] = axis[None, :]
    z[:, :, dims[1]] = axis[::-1, None]
    return z


def latent_grid(
    model: VAE,
    n: int,
    *,
    spacing: str = "quantile",
    extent: float = 0.9,
    dims: tuple[int, int] = (0, 1),
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode an n×n slice of latent space in one batched call: (images (n, n, H, W), axis values (n,))."""
    axis = grid_axis(n, spacing=spacing, extent=extent)
    z = grid_latents(axis, latent_dim=model.config.latent_dim, dims=dims, base=base)
    images = decode_images(model, z.reshape(n * n, -1))  # (n*n, H, W)
    return images.reshape(n, n, *images.shape[1:]), axis


def to_display(z: np.ndarray, spacing: str) -> np.ndarray:
    """Latent values -> the grid's plotting coordinates: Φ(z) on the quantile scale, z itself on a range."""
    return torch.special.ndtr(torch.as_tensor(z, dtype=torch.float64)).numpy() if spacing == "quantile" else z


def from_display(u: np.ndarray, spacing: str) -> np.ndarray:
    """The inverse of `to_display`."""
    if spacing != "quantile":
        return np.asarray(u)
    p = torch.as_tensor(u, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    return torch.special.ndtri(p).numpy()


def interpolate(
    z0: np.ndarray | Sequence[float], z1: np.ndarray | Sequence[float], steps: int, *, method: str = "linear"
) -> np.ndarray:
    """`steps` points from z0 to z1 inclusive: (steps, latent_dim).

    slerp follows the great circle between the directions while the norm changes linearly, which
    keeps the path in the prior's typical shell instead of cutting through its low-norm centre.
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    if steps < 2:
        raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
    t = np.linspace(0.0, 1.0, steps)[:, None]  # (steps, 1)
    if method == "linear":
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    if method != "slerp":
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if n0 < 1e-8 or n1 < 1e-8:
        return ((1 - t) * z0 + t * z1).astype(np.float32)  # no direction to follow at the origin
    omega = np.arccos(np.clip(z0 @ z1 / (n0 * n1), -1.0, 1.0))
    if omega < 1e-6:
        directions = (1 - t) * z0 / n0 + t * z1 / n1
    else:
        directions = (np.sin((1 - t) * omega) * z0 / n0 + np.sin(t * omega) * z1 / n1) / np.sin(omega)
    return (directions * ((1 - t) * n0 + t * n1)).astype(np.float32)


def latent_arithmetic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a − b + c: the analogy "a is to b as ? is to c" in latent space."""
    return (np.asarray(a, np.float32) - np.asarray(b, np.float32) + np.asarray(c, np.float32)).astype(
        np.float32
    )


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and the first two principal directions (2, D) of points (N, D), for `project`.

    The one PCA of the explorer: every page's map of more than two latent dimensions, the Atlas and
    the training timelapse use it. An SVD gives each direction up to its sign, so the sign is fixed
    by a rule: each direction's largest loading (the entry of largest |.|, the first such on a tie)
    is positive. The same points then give the same picture on every page, never a mirror image.
    Computed in float64 whatever the points' dtype.
    """
    points = np.asarray(points, np.float64)
    mean = points.mean(0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    components = vt[:2]  # (2, D)
    largest = components[np.arange(len(components)), np.abs(components).argmax(1)]
    return mean, components * np.where(largest < 0, -1.0, 1.0)[:, None]


def project(points: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Points (N, D), or one (D,) -> their coordinates (N, 2) on the principal directions of `pca_2d`."""
    return (np.atleast_2d(points) - mean) @ components.T


def kl_order(kl_per_dim: Sequence[float], *, threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Dimensions sorted by KL, largest first, and a mask (by dimension) of the inactive ones.

    A dimension is inactive when its KL is below `threshold` times the largest: the posterior
    has collapsed onto the prior there, so the decoder ignores it.
    """
    kl = np.asarray(kl_per_dim, np.float64)
    order = np.argsort(-kl, kind="stable")
    inactive = kl < threshold * kl.max() if kl.size and kl.max() > 0 else np.ones(kl.shape, bool)
    return order, inactive


def tile(images: np.ndarray, nrow: int, *, pad: int = 1, pad_value: float | None = None) -> np.ndarray:
    """Images (N, H, W) or (N, H, W, 3) -> one (rows*H + pad, nrow*W + pad[, 3]) array, row-major,
    padded between cells.

    The padding is white (1.0, or 255 for uint8 pixels) unless `pad_value` says otherwise.
    """
    images = np.asarray(images)
    if pad_value is None:
        pad_value = 255 if images.dtype == np.uint8 else 1.0
    (n, h, w), rest = images.shape[:3], images.shape[3:]
    rows = -(-n // nrow)
    cells = np.full((rows * nrow, h + pad, w + pad, *rest), pad_value, images.dtype)
    cells[:n, :h, :w] = images  # each cell: the image, then `pad` below and to the right
    grid = cells.reshape(rows, nrow, h + pad, w + pad, *rest).swapaxes(1, 2)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, *rest), pad_value, images.dtype)
    out[pad:, pad:] = grid.reshape(rows * (h + pad), nrow * (w + pad), *rest)
    return out


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB in [0, 1] on a black-red-yellow-white ramp (for error maps)."""
    v = np.clip(np.asarray(values, np.float32), 0, 1)[..., None]
    return np.clip(v * 3 - np.array([0.0, 1.0, 2.0], np.float32), 0, 1)


def error_heat(error: np.ndarray) -> np.ndarray:
    """Error maps |x - x_hat| (N, H, W), or (N, H, W, 3) for colour, -> heat maps (N, H, W, 3): the
    per-pixel error, averaged over a colour image's channels, on the `colorize` ramp."""
    error = np.asarray(error)
    per_pixel = error.mean(axis=-1) if error.ndim == 4 else error  # (N, H, W)
    return colorize(per_pixel)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> uint8 grey (or RGB) levels, rounded; uint8 images are returned as they are.

    Converting before tiling or enlarging moves a quarter of the bytes a float image would.
    """
    images = np.asarray(images)
    return images if images.dtype == np.uint8 else (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def _pil(image: np.ndarray, scale: int) -> Image.Image:
    pil = Image.fromarray(to_pixels(image))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def to_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """One image (H, W) or (H, W, 3), in [0, 1] or uint8 -> PNG bytes, enlarged `scale` times with
    sharp pixels. Fast rather than small, as these are redrawn live: zlib's lowest level with
    run-length matches only (decoded digits are mostly runs of one grey) is faster than its default
    strategy on a decoded grid, and the file comes out smaller."""
    buffer = io.BytesIO()
    _pil(image, scale).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def to_gif(frames: np.ndarray, *, duration_ms: int = 100, scale: int = 4) -> bytes:
    """Frames (T, H, W) or (T, H, W, 3) in [0, 1] -> an animated GIF that loops forever,
    `duration_ms` per frame."""
    images = [_pil(frame, scale) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    return buffer.getvalue()


# ---------------------------------------------------------------- one encoded image: its posterior and place


def sample_posterior(
    mu: np.ndarray | Sequence[float], logvar: np.ndarray | Sequence[float], n: int, *, seed: int = 0
) -> np.ndarray:
    """n latent vectors z ~ q(z|x) = N(mu, diag exp(logvar)) from a seeded generator: (n, latent_dim)."""
    mu, logvar = _as_tensor(mu), _as_tensor(logvar)  # (latent_dim,) each
    if mu.ndim != 1 or mu.shape != logvar.shape:
        shapes = f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        raise ValueError(f"mu and logvar must be two (latent_dim,) vectors, got shapes {shapes}")
    eps = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(int(seed)))
    return reparameterize(mu, logvar, eps).numpy()


def nearest(points: np.ndarray, query: np.ndarray | Sequence[float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of points (N, D) closest to query (D,), Euclidean: (indices (k,), distances (k,)).

    Nearest first; equal distances keep the order of `points`. Fewer than k points give them all.
    """
    distances = np.linalg.norm(np.asarray(points) - np.asarray(query), axis=1)  # (N,)
    order = np.argsort(distances, kind="stable")[: max(k, 0)]
    return order, distances[order]


def percentile_of(values: np.ndarray | Sequence[float], value: float) -> float:
    """Where `value` ranks among `values`, 0-100: the percentage below it, ties counted half."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("percentile_of needs at least one value to compare with")
    below, ties = np.sum(values < value), np.sum(values == value)
    return float(100.0 * (below + 0.5 * ties) / values.size)


def sigma_ellipse(
    mu: np.ndarray | Sequence[float],
    logvar: np.ndarray | Sequence[float],
    *,
    n_std: float = 1.0,
    projection: tuple[np.ndarray, np.ndarray] | None = None,
    n_points: int = 64,
) -> np.ndarray:
    """The n_std-σ contour of q(z|x) = N(mu, diag exp(logvar)) as a closed curve: (n_points + 1, 2).

    In the latent plane for latent_dim 2; otherwise on the map of `projection`, the (mean, components)
    of `pca_2d`: a Gaussian mapped linearly by C (2, D) is N(C (mu - mean), C Σ Cᵀ).
    """
    mu, var = np.asarray(mu, np.float64), np.exp(np.asarray(logvar, np.float64))
    if projection is None:
        if mu.shape != (2,):
            raise ValueError(f"without a projection the posterior must be 2-D, got mu of shape {mu.shape}")
        centre, cov = mu, np.diag(var)
    else:
        mean, components = projection
        centre, cov = project(mu, mean, components)[0], (components * var) @ components.T  # (2,), (2, 2)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2 * np.pi, n_points + 1)
    circle = np.stack([np.cos(t), np.sin(t)], 1)  # (n_points + 1, 2), closed: last point = first
    return centre + n_std * (circle * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def uint8_images(images: np.ndarray) -> np.ndarray:
    """Stored uint8 images (N, C, H, W) -> display images (N, H, W) in [0, 1], grey levels kept."""
    return _channels_last(torch.tensor(np.asarray(images)).float() / 255.0)
