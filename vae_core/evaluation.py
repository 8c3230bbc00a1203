"""Measuring a trained model: test ELBO, the IWAE log-likelihood, KL per dimension, active units.

Every number here comes from `objective.elbo_terms` or `objective.iwae_bound` (with the fused NLL of
`vae_core.fast` unless VAE_FAST=0); nothing recomputes the ELBO. All values are nats per image;
NLL = -log p(x) estimated with k importance samples. For the likelihoods of 8-bit pixels
(`likelihood.bits_per_dim_applies`) `summarize` adds `bits_per_dim`: the NLL (or, with k = 0, the
negative ELBO, an upper bound) divided by C H W ln 2, with `bits_per_dim_from` naming which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vae_core import fast
from vae_core.data import ImageSet, fixed_binarization, to_float
from vae_core.likelihood import bits_per_dim
from vae_core.model import VAE
from vae_core.objective import gaussian_kl, iwae_bound

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015: Cov_x(E_q[u]) above 1e-2 marks an active unit


@dataclass(frozen=True)
class Scores:
    """Per-image results on a set of images, all on the CPU."""

    recon: Tensor  # (N,)
    kl: Tensor  # (N,)
    mu: Tensor  # (N, D)
    logvar: Tensor  # (N, D)

    @property
    def elbo(self) -> Tensor:
        return -(self.recon + self.kl)


def eval_inputs(images: ImageSet | Tensor, binarize: str, seed: int = 0) -> Tensor:
    """uint8 images -> the model's test inputs: binarised once with `seed` for `dynamic` models."""
    raw = images.images if isinstance(images, ImageSet) else images
    return fixed_binarization(raw, seed) if binarize == "dynamic" else to_float(raw)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """A block with its own seeded RNG; the caller's random stream is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def score(model: VAE, x: Tensor, *, batch_size: int = 1000, seed: int = 0) -> Scores:
    """ELBO terms (one posterior sample per image) and the posterior of every image in x."""
    with seeded(seed, model.device):
        parts = [
            fast.elbo_terms(model, x[i : i + batch_size].to(model.device))
            for i in range(0, len(x), batch_size)
        ]
    return Scores(*(torch.cat([getattr(p, f).cpu() for p in parts]) for f in ("recon", "kl", "mu", "logvar")))


def kl_per_dim(scores: Scores) -> Tensor:
    """The mean KL of each latent dimension over the images: (D,), sums to the mean KL."""
    return gaussian_kl(scores.mu, scores.logvar).mean(0)


def active_units(scores: Scores, threshold: float = ACTIVE_UNIT_THRESHOLD) -> Tensor:
    """Dimensions whose posterior mean varies across images: Cov_x(E_q(u|x)[u]) > threshold."""
    return scores.mu.var(0, unbiased=False) > threshold


DECODE_BYTES = 256 * 2**20  # the widest activation of one chunk of IWAE decodes, at most
MLP_ROWS = 20_000  # an MLP's rows are small: this many fit any MLP the spec allows


def decode_rows(model: VAE) -> int:
    """How many latent samples IWAE decodes at once: an MLP's many, a conv's as many as keep its
    widest activation (first hidden channels at full resolution, float32) within DECODE_BYTES, so
    the chunk stays in memory the CPU reuses instead of pages it faults in."""
    if getattr(model.config, "arch", None) != "conv":  # an MLP, or an ONNX graph (its own chunks)
        return MLP_ROWS
    _, h, w = model.config.image_shape
    return max(1, DECODE_BYTES // (model.config.hidden[0] * h * w * 4))


@torch.no_grad()
def log_likelihood(
    model: VAE, x: Tensor, k: int, *, batch_size: int = 100, seed: int = 0, progress: bool = False
) -> Tensor:
    """The IWAE estimate of log p(x) with k samples for every image: (N,), on the CPU."""
    out = []
    with (
        seeded(seed, model.device),
        tqdm(total=len(x), desc=f"IWAE k={k}", unit="img", disable=not progress) as bar,
    ):
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size].to(model.device)
            out.append(iwae_bound(model, batch, k, max_rows=decode_rows(model), nll=fast.nll(model)).cpu())
            bar.update(len(out[-1]))
    return torch.cat(out)


def nll_subset(metrics: dict) -> str:
    """ ", first N images" when the metrics' NLL covers only the first N of their images, else ""."""
    n = metrics.get("nll_n", metrics.get("n_images"))
    return f", first {n} images" if n is not None and n < metrics.get("n_images", n) else ""


def summarize(
    model: VAE,
    x: Tensor,
    *,
    k: int = 0,
    nll_n: int | None = None,
    progress: bool = False,
    check: bool = True,
) -> dict:
    """The metrics a checkpoint carries: test ELBO (recon + KL), KL per dim, active units, NLL (k > 0)
    and, with `check`, the seeded fingerprint that ties a model card to its weights.

    `nll_n` scores the NLL on the first nll_n images only, for models whose k decodes per image are
    too dear for the whole test set; the ELBO still covers every image. The metrics' `nll_n` says how
    many images the NLL covers (all of them without `nll_n`)."""
    scores = score(model, x)
    per_dim = kl_per_dim(scores)
    metrics = {
        "n_images": len(x),
        "elbo": scores.elbo.mean().item(),
        "recon": scores.recon.mean().item(),
        "kl": scores.kl.mean().item(),
        "kl_per_dim": per_dim.tolist(),
        "active_units": int(active_units(scores).sum()),
    }
    if k > 0:
        scored = x[:nll_n]
        metrics["nll"] = -log_likelihood(model, scored, k, progress=progress).mean().item()
        metrics["nll_k"] = k
        metrics["nll_n"] = len(scored)  # always written, so a later full evaluation replaces a partial one
    if model.likelihood.bits_per_dim_applies:
        source = "nll" if k > 0 else "elbo"
        nats = metrics["nll"] if k > 0 else -metrics["elbo"]
        metrics["bits_per_dim"] = bits_per_dim(nats, model.config.image_shape)
        metrics["bits_per_dim_from"] = source
    if check:
        metrics["check"] = fingerprint(model, x)
    return metrics


def fingerprint(model: VAE, x: Tensor, n: int = 500, k: int = 10) -> dict:
    """Seeded ELBO and IWAE-k on the first n images: cheap to recompute, so tests can tie a card's
    numbers to its weights exactly."""
    x = x[:n]
    return {
        "n": len(x),
        "k": k,
        "elbo": score(model, x).elbo.mean().item(),
        "nll": -log_likelihood(model, x, k).mean().item(),
    }
