"""Pixel likelihoods p(x|z): how a decoder's output scores an image and what image it shows.

A `Likelihood` turns the decoder's parameters into log p(x|z) summed over each image's pixels and
into the image to display. Code that scores images asks the model's likelihood
(`model.likelihood.log_prob(x, model.decode(z))`) and never names a pixel model itself.

    name        params per image channel   x                      shown image (`mean`)
    bernoulli   1: logits                  {0, 1} or grey [0, 1]  sigmoid(logits) = E[x|z]
    logistic    2: [locations; log-scales] k / 255, k in 0..255   the location, clamped to [0, 1]

A decoder gives `param_channels(C)` channels for C image channels. For the 8-bit likelihoods
(`bits_per_dim_applies`), -log p(x|z) in nats per image converts to bits per dimension by
`bits_per_dim` = -log p / (C H W ln 2); a uniform model over 256 levels scores 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_core.objective import LOG_2PI, bernoulli_nll

LEVELS = 256  # 8-bit pixels: x = k / 255, k in 0..255
HALF_BIN = 0.5 / (LEVELS - 1)  # half the width of one bin on the [0, 1] scale
# PixelCNN++'s floor on the log-scale: a bin never gets a density sharper than e^7 bins per unit.
MIN_LOG_SCALE = -7.0


class Likelihood(Protocol):
    """p(x|z) given the decoder's parameters for it."""

    name: str
    bits_per_dim_applies: bool  # a distribution over 8-bit pixels: log p is a log-probability

    def param_channels(self, channels: int) -> int:
        """Decoder output channels for `channels` image channels."""
        ...

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) summed over pixels: x (N, C, H, W), params (N, P, H, W) -> (N,) in nats."""
        ...

    def mean(self, params: Tensor) -> Tensor:
        """The image to display: (N, P, H, W) -> (N, C, H, W) in [0, 1]."""
        ...

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x|z): (N, P, H, W) -> (N, C, H, W)."""
        ...


def bits_per_dim(nll: Tensor | float, image_shape: tuple[int, ...]) -> Tensor | float:
    """-log p(x) in nats per image -> bits per dimension: nll / (C H W ln 2)."""
    return nll / (math.prod(image_shape) * math.log(2))


@dataclass(frozen=True)
class Bernoulli:
    """Independent Bernoulli pixels; params are the logits. Shows E[x|z] = sigmoid(logits)."""

    name: ClassVar[str] = "bernoulli"
    bits_per_dim_applies: ClassVar[bool] = False  # x is binary (or grey, scored as a soft target)

    def param_channels(self, channels: int) -> int:
        return channels

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -bernoulli_nll(params, x)

    def mean(self, params: Tensor) -> Tensor:
        """The mean of each pixel, sigmoid(logit): a grey level, not a draw of 0s and 1s."""
        return torch.sigmoid(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


@dataclass(frozen=True)
class Gaussian:
    """Independent Gaussian pixels N(x; params, sigma^2) with a fixed scale sigma; params are the mean."""

    sigma: float
    name: ClassVar[str] = "gaussian"
    bits_per_dim_applies: ClassVar[bool] = False  # a density, not a probability of 8-bit values

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be a positive number, got {self.sigma}")

    def param_channels(self, channels: int) -> int:
        return channels

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        # log N(x; m, s^2) = -((x - m) / s)^2 / 2 - log s - log(2 pi) / 2, per pixel
        per_pixel = ((x - params) / self.sigma).pow(2).add(LOG_2PI).mul(-0.5) - math.log(self.sigma)
        return per_pixel.flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        """The mean of each pixel: the decoder's output itself."""
        return params

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        return params + self.sigma * noise


@dataclass(frozen=True)
class DiscretizedLogistic:
    """8-bit pixels from a logistic per pixel, discretised into 256 bins (Salimans et al. 2017,
    PixelCNN++; Kingma et al. 2016, IAF).

    params (N, 2C, H, W) = [locations mu (N, C, H, W); log-scales log s (N, C, H, W)], on the [0, 1]
    scale of x = k / 255. Bin k holds the logistic's mass within half a bin of k / 255; the edge bins
    take the tails: P(0) = F(1/510), P(255) = 1 - F(1 - 1/510), with F the logistic's CDF. The 256
    probabilities sum to 1 exactly. log-scales below MIN_LOG_SCALE are raised to it.

    `mean` shows the location clamped to [0, 1]: the mode of the continuous logistic, and its mean
    up to the mass the clamping at the edges moves (small unless the scale is wide).
    """

    name: ClassVar[str] = "logistic"
    bits_per_dim_applies: ClassVar[bool] = True

    def param_channels(self, channels: int) -> int:
        return 2 * channels

    @staticmethod
    def split(params: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 2C, H, W) -> locations, log-scales (floored at MIN_LOG_SCALE), each (N, C, H, W)."""
        loc, log_scale = params.chunk(2, dim=1)
        return loc, log_scale.clamp(min=MIN_LOG_SCALE)

    def log_prob_pixels(self, x: Tensor, params: Tensor) -> Tensor:
        """log P(x) of every pixel: x (N, C, H, W) in {k / 255} -> (N, C, H, W).

        With a = (x + 1/510 - mu) / s and b = (x - 1/510 - mu) / s, an inner bin holds
        sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)), whose log is a sum of
        log-sigmoids and log(-expm1(-(a - b))): finite for any parameters, no cancellation."""
        loc, log_scale = self.split(params)
        inv_scale = torch.exp(-log_scale)
        centred = x - loc
        a, b = inv_scale * (centred + HALF_BIN), inv_scale * (centred - HALF_BIN)
        inner = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-2 * HALF_BIN * inv_scale))
        k = torch.round(x * (LEVELS - 1))
        return torch.where(k <= 0, F.logsigmoid(a), torch.where(k >= LEVELS - 1, F.logsigmoid(-b), inner))

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return self.log_prob_pixels(x, params).flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        """The location of each pixel's logistic, clamped to [0, 1]: its mode and median. (The
        discretised distribution's mean sits nearer the middle where the scale is wide; the mode is
        the sharper picture.)"""
        return self.split(params)[0].clamp(0.0, 1.0)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A logistic draw mu + s log(u / (1 - u)), rounded to its bin and clamped to [0, 1]."""
        loc, log_scale = self.split(params)
        tiny = torch.finfo(loc.dtype).tiny
        u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        u = u.clamp(tiny, 1 - torch.finfo(loc.dtype).eps)
        x = loc + log_scale.exp() * (torch.log(u) - torch.log1p(-u))
        return torch.round(x.clamp(0.0, 1.0) * (LEVELS - 1)) / (LEVELS - 1)


# The likelihoods a model can be trained with, by the name vae_core.spec.LIKELIHOODS offers.
LIKELIHOODS: dict[str, Likelihood] = {"bernoulli": Bernoulli(), "logistic": DiscretizedLogistic()}


def get(name: str) -> Likelihood:
    """The likelihood called `name`; ValueError listing the known ones otherwise."""
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]


@dataclass(frozen=True)
class Description:
    """What a likelihood means, in words for a reader: the decoder's pixel model and the image shown."""

    pixels: str  # p(x|z), completing "a decoder p(x|z): ..."
    shown: str  # the image displayed for a decoded z


DESCRIPTIONS: dict[str, Description] = {
    "bernoulli": Description(
        pixels="one Bernoulli per pixel, with logits from the network",
        shown="pixel means, sigmoid of the logits",
    ),
    "logistic": Description(
        pixels="a logistic per pixel and channel discretised into 256 levels (PixelCNN++), with its "
        "location and scale from the network",
        shown="each pixel's logistic location, clamped to [0, 1]",
    ),
    "gaussian": Description(
        pixels="one Gaussian per pixel with a fixed scale, its mean from the network",
        shown="pixel means",
    ),
}


def describe(name: str) -> Description:
    """A short description of the likelihood called `name`, for a page or a model card."""
    if name not in DESCRIPTIONS:
        return Description(pixels=f"a {name} likelihood per pixel", shown="the likelihood's mean")
    return DESCRIPTIONS[name]
