"""Pixel likelihoods p(x|z): how a decoder's output scores an image and what image it shows.

A `Likelihood` turns the decoder's parameters into log p(x|z) summed over each image's pixels and
into the image to display. Code that scores images asks the model's likelihood
(`model.likelihood.log_prob(x, model.decode(z))`) and never names a pixel model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from vae_core.objective import LOG_2PI, bernoulli_nll


class Likelihood(Protocol):
    """p(x|z) given the decoder's parameters for it."""

    name: str

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) summed over pixels: x, params (N, C, H, W) -> (N,) in nats."""
        ...

    def mean(self, params: Tensor) -> Tensor:
        """The image to display, E[x|z]: (N, C, H, W)."""
        ...


@dataclass(frozen=True)
class Bernoulli:
    """Independent Bernoulli pixels; params are the logits."""

    name: ClassVar[str] = "bernoulli"

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -bernoulli_nll(params, x)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


@dataclass(frozen=True)
class Gaussian:
    """Independent Gaussian pixels N(x; params, sigma^2) with a fixed scale sigma; params are the mean."""

    sigma: float
    name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be a positive number, got {self.sigma}")

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        # log N(x; m, s^2) = -((x - m) / s)^2 / 2 - log s - log(2 pi) / 2, per pixel
        per_pixel = ((x - params) / self.sigma).pow(2).add(LOG_2PI).mul(-0.5) - math.log(self.sigma)
        return per_pixel.flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return params
