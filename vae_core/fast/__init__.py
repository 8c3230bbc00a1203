"""Fast paths to the textbook numbers of `vae_core.objective`, behind one switch.

Each computes what the textbook code computes, and a test holds it to that code:

    nll.bernoulli_nll       the Bernoulli NLL in one pass, with its closed-form gradient
    backprop.MLPBackprop    the training step of a ReLU MLP VAE with its gradient written out
    bf16                    bfloat16 matrix products on a CPU, left to oneDNN where it rounds them

The switch is the environment variable VAE_FAST: 1 (the default) uses them wherever they apply,
0 runs the textbook code alone (autograd through `objective.elbo_terms`), to check a result
against it or to read a step in a profiler. `enabled()` is the only place that reads it.
"""

from __future__ import annotations

import os

from torch import Tensor

from vae_core import objective
from vae_core.fast.backprop import MLPBackprop
from vae_core.fast.nll import bernoulli_nll as fused_bernoulli_nll
from vae_core.model import VAE

ENV = "VAE_FAST"

__all__ = ["ENV", "MLPBackprop", "elbo_terms", "enabled", "fused_bernoulli_nll", "nll", "writes_out_gradient"]


def enabled() -> bool:
    """Whether the fast paths are on: VAE_FAST unset or 1; 0 turns them off."""
    value = os.environ.get(ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 (textbook code only) or 1 (fast paths, the default): {value!r}")
    return value == "1"


def _bernoulli(model: VAE | None) -> bool:
    return model is None or model.likelihood.name == "bernoulli"


def nll(model: VAE | None = None) -> objective.NLL:
    """The NLL to score `model` with: for Bernoulli pixels (and no model) the fused one when the fast
    paths are on, else the textbook one; any other likelihood's own `log_prob`."""
    if not _bernoulli(model):
        return objective.likelihood_nll(model)
    return fused_bernoulli_nll if enabled() else objective.bernoulli_nll


def elbo_terms(model: VAE, x: Tensor, *, sample: bool = True) -> objective.ElboTerms:
    """`objective.elbo_terms`, with the fused Bernoulli NLL when the fast paths are on."""
    return objective.elbo_terms(model, x, sample=sample, nll=nll(model))


def writes_out_gradient(model: VAE) -> bool:
    """Whether a training step of `model` takes the written-out gradient (`MLPBackprop`): a ReLU MLP
    with Bernoulli pixels, whose gradient at the logits it writes out."""
    return enabled() and _bernoulli(model) and MLPBackprop.supports(model)
