"""The VAE: its config, the two architectures (`mlp`, `conv`) and the encode/decode contract.

q(z|x) = N(mu, diag(exp(logvar))) is the encoder, p(z) = N(0, I) the prior and p(x|z) a product of
Bernoullis whose decoder returns logits. The objective lives in `vae_core.objective`, not here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vae_core.spec import ARCHITECTURES as ARCHITECTURES  # re-exported with the config
from vae_core.spec import RunSpec, VAEConfig

if TYPE_CHECKING:
    from vae_core.likelihood import Likelihood

# The module of each activation the spec offers (vae_core.spec.ACTIVATIONS names them).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def _mlp(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    """Linear layers through `sizes`, an activation after each one."""
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), activation()]
    return layers


def _conv_sizes(height: int, n_layers: int) -> list[int]:
    """Spatial sizes after each stride-2 convolution (kernel 3, padding 1): 28 -> 14 -> 7 -> 4."""
    sizes = [height]
    for _ in range(n_layers):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _build_mlp(config: VAEConfig, act: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    c, h, w = config.image_shape
    widths = [c * h * w, *config.hidden]
    encoder = nn.Sequential(nn.Flatten(), *_mlp(widths, act), nn.Linear(widths[-1], 2 * config.latent_dim))
    decoder_widths = [config.latent_dim, *reversed(config.hidden)]
    decoder = nn.Sequential(
        *_mlp(decoder_widths, act),
        nn.Linear(decoder_widths[-1], c * h * w),
        nn.Unflatten(1, config.image_shape),
    )
    return encoder, decoder


def _build_conv(config: VAEConfig, act: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    c, h, w = config.image_shape
    if h != w:
        raise ValueError(f"conv needs square images, got {config.image_shape}")
    channels = [c, *config.hidden]
    sizes = _conv_sizes(h, len(config.hidden))
    flat = channels[-1] * sizes[-1] ** 2

    encoder: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(channels):
        encoder += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), act()]
    encoder += [nn.Flatten(), nn.Linear(flat, 2 * config.latent_dim)]

    decoder: list[nn.Module] = [
        nn.Linear(config.latent_dim, flat),
        act(),
        nn.Unflatten(1, (channels[-1], sizes[-1], sizes[-1])),
    ]
    for i in reversed(range(len(config.hidden))):
        # A stride-2 transposed conv maps s -> 2s - 1 + output_padding; pick it to hit the target.
        output_padding = sizes[i] - (2 * sizes[i + 1] - 1)
        decoder.append(
            nn.ConvTranspose2d(
                channels[i + 1], channels[i], 3, stride=2, padding=1, output_padding=output_padding
            )
        )
        if i > 0:
            decoder.append(act())
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


@dataclass
class CheckpointMeta:
    """What a checkpoint says about the model besides its weights (filled by `load_checkpoint`)."""

    spec: RunSpec = field(default_factory=RunSpec)  # how the model was trained, typed
    metrics: dict = field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    path: str = ""

    @property
    def dataset(self) -> str:
        return self.spec.data.name


class VAE(nn.Module):
    """A VAE with a diagonal-Gaussian posterior, a standard-normal prior and Bernoulli pixels."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.meta = CheckpointMeta(spec=RunSpec(model=config))
        build = _build_mlp if config.arch == "mlp" else _build_conv
        self.encoder, self.decoder = build(config, ACTIVATIONS[config.activation])

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) in [0, 1] -> mu, logvar: each (N, latent_dim)."""
        if x.shape[1:] != self.config.image_shape:
            raise ValueError(
                f"encode expects images of shape (N, {', '.join(map(str, self.config.image_shape))}),"
                f" got {tuple(x.shape)}"
            )
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """z: (N, latent_dim) -> Bernoulli logits (N, C, H, W)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"decode expects z of shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    @property
    def likelihood(self) -> Likelihood:
        """p(x|z): Bernoulli pixels, scored from the decoder's logits."""
        from vae_core.likelihood import Bernoulli  # not at the top: likelihood -> objective -> model

        return Bernoulli()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
