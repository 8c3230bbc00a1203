"""The ELBO and the importance-weighted bound, in nats per image.

For a VAE with encoder q(z|x) = N(mu, diag exp(logvar)), prior p(z) = N(0, I) and a decoder that
gives the parameters of its pixel likelihood (`model.likelihood`), the evidence lower bound of one
image is

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) = -(recon + kl)

with recon = -log p(x|z) = -model.likelihood.log_prob(x, params) at one sample
z = mu + sigma * eps (`reparameterize`) and kl in closed form (`gaussian_kl`). `elbo_terms` is the
one place the ELBO is computed: training, evaluation, the CLI and every page call it. β and KL
warm-up belong to the training loss only; a reported ELBO is always recon + KL (β = 1). Faster
paths to the same numbers live in `vae_core.fast`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_core.model import VAE

LOG_2PI = math.log(2 * math.pi)
NLL = Callable[[Tensor, Tensor], Tensor]  # (decoder params, x) -> -log p(x|z) per image, (N,)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, closed form: (N, D) -> (N, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def bernoulli_nll(x_logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) for Bernoulli pixels with the given logits, summed over pixels: -> (N,).

    Per pixel -log Bernoulli(x; sigmoid(l)) = softplus(l) - x l, which PyTorch's
    `binary_cross_entropy_with_logits` evaluates without overflow for any l; x may be grey (in [0, 1]).
    """
    return F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I), so gradients flow into mu and logvar.

    `eps` is drawn with `torch.randn_like(mu)` unless given; a given eps may carry leading sample
    dimensions, (S, N, D) for (N, D) posteriors."""
    eps = torch.randn_like(mu) if eps is None else eps
    return mu + torch.exp(0.5 * logvar) * eps


@dataclass(frozen=True)
class ElboTerms:
    """Per-image terms of the ELBO, each (N,) in nats: ELBO = -(recon + kl)."""

    recon: Tensor
    kl: Tensor
    mu: Tensor
    logvar: Tensor
    x_logits: Tensor

    @property
    def elbo(self) -> Tensor:
        return -(self.recon + self.kl)

    def loss(self, beta: float = 1.0) -> Tensor:
        """The training loss: the batch mean of recon + beta * KL (beta = 1 is the negative ELBO)."""
        return (self.recon + beta * self.kl).mean()

    @classmethod
    def of(
        cls, x: Tensor, mu: Tensor, logvar: Tensor, x_logits: Tensor, *, nll: NLL = bernoulli_nll
    ) -> ElboTerms:
        """Score one decoding: recon = nll(x_logits, x), KL of N(mu, exp(logvar)) from the prior.

        Scored in x's precision at least: under bfloat16 autocast the network's outputs are bfloat16,
        and scoring MNIST in bfloat16 arithmetic is off by up to a nat an image (0.04 nats from the
        rounded logits alone)."""
        mu, logvar, x_logits = (t.to(torch.promote_types(t.dtype, x.dtype)) for t in (mu, logvar, x_logits))
        kl = gaussian_kl(mu, logvar).sum(1)
        return cls(recon=nll(x_logits, x), kl=kl, mu=mu, logvar=logvar, x_logits=x_logits)


def likelihood_nll(model: VAE) -> NLL:
    """-log p(x|z) of the model's own likelihood, as an NLL function."""
    likelihood = model.likelihood
    return lambda params, x: -likelihood.log_prob(x, params)


def elbo_terms(model: VAE, x: Tensor, *, sample: bool = True, nll: NLL | None = None) -> ElboTerms:
    """Encode x, decode one z per image (the posterior mean if sample=False), and score it with `nll`,
    by default the model's likelihood."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar) if sample else mu
    return ElboTerms.of(x, mu, logvar, model.decode(z), nll=nll or likelihood_nll(model))


def _log_weights(model: VAE, x: Tensor, mu: Tensor, logvar: Tensor, n: int, nll: NLL) -> Tensor:
    """log p(x, z_s) - log q(z_s|x) for n samples z_s ~ q(z|x): (B, ...) -> (n, B)."""
    eps = torch.randn((n, *mu.shape), device=mu.device, dtype=mu.dtype)  # (n, B, D)
    z = reparameterize(mu, logvar, eps)
    # log q(z|x) in terms of eps avoids dividing by a tiny sigma.
    log_q = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)
    log_prior = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
    x_logits = model.decode(z.flatten(0, 1))  # (n * B, C, H, W)
    targets = x.expand(n, *x.shape).flatten(0, 1)
    log_px_z = -nll(x_logits, targets).view(n, -1)
    return log_px_z + log_prior - log_q


@torch.no_grad()
def iwae_bound(model: VAE, x: Tensor, k: int, *, max_rows: int = 20_000, nll: NLL | None = None) -> Tensor:
    """The importance-weighted bound log (1/k) sum_s p(x, z_s) / q(z_s|x) (Burda et al. 2015).

    A lower bound on log p(x) that equals the ELBO in expectation for k = 1 and tightens as k grows.
    Samples are decoded in chunks of at most `max_rows` images, so memory does not grow with k.
    Returns (N,) in nats (a log-likelihood: negate it for the NLL). `nll` defaults to the model's
    likelihood.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nll = nll or likelihood_nll(model)
    mu, logvar = model.encode(x)
    per_chunk = max(1, max_rows // x.shape[0])
    chunks = [
        _log_weights(model, x, mu, logvar, min(per_chunk, k - start), nll) for start in range(0, k, per_chunk)
    ]
    return torch.logsumexp(torch.cat(chunks), dim=0) - math.log(k)
