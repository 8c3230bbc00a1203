"""The VAE: its config, the two architectures (`mlp`, `conv`) and the encode/decode contract.

q(z|x) = N(mu, diag(exp(logvar))) is the encoder, p(z) = N(0, I) the prior and p(x|z) the
configured pixel likelihood (`vae_core.likelihood`): the decoder returns its parameters,
`likelihood.param_channels(C)` channels per image (Bernoulli logits: C; logistic: 2C). The
objective lives in `vae_core.objective`, not here.

    mlp   Flatten -> Linear + activation per hidden width -> Linear; any (C, H, W).
    conv  per hidden width a stride-2 3x3 convolution and RES_BLOCKS residual blocks at the new
          resolution, then a Linear to the posterior; the decoder mirrors it with stride-2
          transposed convolutions. Square images of any side (16 to 128 in the spec), grey or colour.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vae_core.spec import ARCHITECTURES as ARCHITECTURES  # re-exported with the config
from vae_core.spec import EIGHT_BIT_LIKELIHOODS, DataSpec, RunSpec, VAEConfig

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


RES_BLOCKS = 1  # residual blocks at each resolution of the conv architecture


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))): two 3x3 convolutions that keep channels and size (He et al. 2016)."""

    def __init__(self, channels: int, act: type[nn.Module]) -> None:
        super().__init__()
        conv = [nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2)]
        self.body = nn.Sequential(act(), conv[0], act(), conv[1])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _param_shape(config: VAEConfig) -> tuple[int, int, int]:
    """The decoder's output per image: (likelihood params per pixel, H, W)."""
    from vae_core.likelihood import get  # not at the top: likelihood -> objective -> model

    c, h, w = config.image_shape
    return get(config.likelihood).param_channels(c), h, w


def _build_mlp(config: VAEConfig, act: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    c, h, w = config.image_shape
    out_shape = _param_shape(config)
    widths = [c * h * w, *config.hidden]
    encoder = nn.Sequential(nn.Flatten(), *_mlp(widths, act), nn.Linear(widths[-1], 2 * config.latent_dim))
    decoder_widths = [config.latent_dim, *reversed(config.hidden)]
    decoder = nn.Sequential(
        *_mlp(decoder_widths, act),
        nn.Linear(decoder_widths[-1], math.prod(out_shape)),
        nn.Unflatten(1, out_shape),
    )
    return encoder, decoder


def _build_conv(config: VAEConfig, act: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    c, h, w = config.image_shape
    if h != w:
        raise ValueError(f"conv needs square images, got {config.image_shape}")
    channels = [c, *config.hidden]
    out_channels = _param_shape(config)[0]
    sizes = _conv_sizes(h, len(config.hidden))
    flat = channels[-1] * sizes[-1] ** 2

    encoder: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(channels):
        encoder += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        encoder += [ResBlock(c_out, act) for _ in range(RES_BLOCKS)]
        encoder.append(act())
    encoder += [nn.Flatten(), nn.Linear(flat, 2 * config.latent_dim)]

    decoder: list[nn.Module] = [
        nn.Linear(config.latent_dim, flat),
        act(),
        nn.Unflatten(1, (channels[-1], sizes[-1], sizes[-1])),
    ]
    for i in reversed(range(len(config.hidden))):
        # A stride-2 transposed conv maps s -> 2s - 1 + output_padding; pick it to hit the target.
        output_padding = sizes[i] - (2 * sizes[i + 1] - 1)
        decoder += [ResBlock(channels[i + 1], act) for _ in range(RES_BLOCKS)]
        if RES_BLOCKS:
            decoder.append(act())
        c_out = channels[i] if i > 0 else out_channels
        decoder.append(
            nn.ConvTranspose2d(channels[i + 1], c_out, 3, stride=2, padding=1, output_padding=output_padding)
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
    """A VAE with a diagonal-Gaussian posterior, a standard-normal prior and the configured pixels."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        # Until a checkpoint says otherwise: 8-bit pixels are not binarised, binary ones dynamically.
        data = DataSpec(binarize="none") if config.likelihood in EIGHT_BIT_LIKELIHOODS else DataSpec()
        self.meta = CheckpointMeta(spec=RunSpec(data=data, model=config))
        build = _build_mlp if config.arch == "mlp" else _build_conv
        self.encoder, self.decoder = build(config, ACTIVATIONS[config.activation])
        if config.arch == "conv":  # oneDNN's CPU convolutions run fastest on channels-last weights
            self.to(memory_format=torch.channels_last)

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
        """z: (N, latent_dim) -> the likelihood's parameters (N, param_channels(C), H, W)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"decode expects z of shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    @property
    def likelihood(self) -> Likelihood:
        """p(x|z), the configured likelihood, scored from the decoder's parameters."""
        from vae_core.likelihood import get  # not at the top: likelihood -> objective -> model

        return get(self.config.likelihood)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
