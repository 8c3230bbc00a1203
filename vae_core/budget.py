"""The memory budget: how much memory a model will take, estimated from its config before it exists.

    estimate(spec, batch_size=None) -> Estimate(params, param_bytes, activation_bytes, total_bytes)
    check(spec_or_config, ...)      -> the Estimate, or BudgetError saying the size and the limit

The shapes come from the builder itself: `VAE(config)` is built on PyTorch's meta device, which
records every tensor's shape and allocates no storage, and one image is passed through it there to
read each layer's output size. So the estimate follows `vae_core.model` exactly, whatever it
builds, and no second copy of the shape rules exists. `state_shapes` gives the parameter shapes a
config implies, which checkpoint loading compares with what a file declares.

Training holds the weights, their gradients and Adam's two moments (4 x the weights), and for a
batch every layer's output (kept for the backward pass) plus as much again for its gradient: a
rough upper bound. Using a model (scoring, decoding) holds the weights and one batch's outputs.

The budget is `DEFAULT_BUDGET_GB` (4 GiB) unless the operator of the machine sets the
environment variable `VAE_MEMORY_BUDGET_GB` (e.g. 24 on a GPU server). It is never read from a
form, a URL or a checkpoint: what a visitor asks for is checked against it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from vae_core.model import VAE
from vae_core.spec import RunSpec, VAEConfig

BUDGET_ENV = "VAE_MEMORY_BUDGET_GB"
DEFAULT_BUDGET_GB = 4.0
GIB = 2**30
FLOAT_BYTES = 4  # weights, optimizer state and activations are float32
TRAINING_COPIES = 4  # weights, gradients, Adam's first and second moments
SCORE_BATCH = 1000  # images per batch when a loaded model scores a test set (evaluation.score)


class BudgetError(ValueError):
    """A model (or a batch of it) that would need more memory than the operator's budget allows."""


@dataclass(frozen=True)
class Estimate:
    """Memory a model needs, in bytes, for training (or for use) with one batch size."""

    params: int  # number of weights
    param_bytes: int  # the weights alone
    activation_bytes: int  # one batch's layer outputs (and, for training, their gradients)
    total_bytes: int
    batch_size: int
    training: bool


def _meta_model(config: VAEConfig) -> VAE:
    """The model with shapes and no storage: nothing is allocated, whatever its size."""
    with torch.device("meta"):
        return VAE(config)


def state_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the state_dict that `VAE(config)` has: {name: shape}."""
    return {name: tuple(t.shape) for name, t in _meta_model(config).state_dict().items()}


def _outputs_per_image(model: VAE) -> int:
    """Numbers every layer outputs for one image, the input included (one meta forward pass)."""
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel())) for m in leaves]
    try:
        x = torch.empty(1, *model.config.image_shape, device="meta")  # (1, C, H, W)
        mu, _ = model.encode(x)
        model.decode(mu)
    finally:
        for hook in hooks:
            hook.remove()
    return math.prod(model.config.image_shape) + sum(sizes)


def _config(spec_or_config: RunSpec | VAEConfig) -> VAEConfig:
    return spec_or_config.model if isinstance(spec_or_config, RunSpec) else spec_or_config


def estimate(
    spec_or_config: RunSpec | VAEConfig, batch_size: int | None = None, *, training: bool = True
) -> Estimate:
    """Memory for training (or, training=False, using) a model on batches of `batch_size` images.

    The batch size defaults to the spec's for training and to `SCORE_BATCH` for use."""
    if batch_size is None:
        trains_spec = training and isinstance(spec_or_config, RunSpec)
        batch_size = spec_or_config.train.batch_size if trains_spec else SCORE_BATCH  # type: ignore[union-attr]
    model = _meta_model(_config(spec_or_config))
    params = sum(p.numel() for p in model.parameters())
    param_bytes = params * FLOAT_BYTES
    per_image = _outputs_per_image(model) * FLOAT_BYTES * (2 if training else 1)
    activation_bytes = batch_size * per_image
    total = param_bytes * (TRAINING_COPIES if training else 1) + activation_bytes
    return Estimate(params, param_bytes, activation_bytes, total, batch_size, training)


def budget_bytes() -> int:
    """The operator's budget: $VAE_MEMORY_BUDGET_GB GiB, else DEFAULT_BUDGET_GB."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return int(DEFAULT_BUDGET_GB * GIB)
    try:
        gb = float(text)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise BudgetError(f"{BUDGET_ENV} must be a positive number of GiB, e.g. 8, got {text!r}")
    return int(gb * GIB)


def shown_bytes(n: int) -> str:
    """A size as people read it: 14.45 GiB, 2.4 MiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 100 else f"{n / 2**20:.1f} MiB"


def describe(e: Estimate) -> str:
    """The estimate in words: total, and what it is made of."""
    if e.training:
        weights = (
            f"{shown_bytes(e.param_bytes)} of weights ({e.params:,} parameters) x {TRAINING_COPIES} for "
            f"their gradients and Adam's two moments"
        )
        use = "training"
    else:
        weights, use = f"{shown_bytes(e.param_bytes)} of weights ({e.params:,} parameters)", "using"
    activations = f"{shown_bytes(e.activation_bytes)} of activations for a batch of {e.batch_size:,} images"
    return f"{use} it needs about {shown_bytes(e.total_bytes)}: {weights}, plus {activations}"


def check(
    spec_or_config: RunSpec | VAEConfig, batch_size: int | None = None, *, training: bool = True
) -> Estimate:
    """The estimate, if it fits the budget; BudgetError stating the size and the limit otherwise."""
    e = estimate(spec_or_config, batch_size, training=training)
    limit = budget_bytes()
    if e.total_bytes > limit:
        advice = "fewer or narrower hidden layers" + (", or a smaller batch size" if training else "")
        raise BudgetError(
            f"This model is too large for this server: {describe(e)}, more than the memory budget of "
            f"{shown_bytes(limit)} (set by the operator with {BUDGET_ENV}). Use {advice}."
        )
    return e
