"""The pixel likelihoods: log p(x|z) against torch.distributions and the objective's Bernoulli NLL."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from vae_core import VAE, VAEConfig, bernoulli_nll
from vae_core.likelihood import Bernoulli, Gaussian


def test_gaussian_log_prob_matches_torch_distributions() -> None:
    """The fixed-scale Gaussian's log p(x|z), summed per image, equals torch's Normal log-prob."""
    torch.manual_seed(0)
    x, mean = torch.rand(4, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 5, 5, dtype=torch.float64)
    expected = Normal(mean, 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(0.3).log_prob(x, mean), expected)
    assert Gaussian(0.3).mean(mean) is mean


def test_gaussian_rejects_a_non_positive_scale() -> None:
    """A scale of zero is refused with a message naming it."""
    with pytest.raises(ValueError, match="sigma must be a positive number, got 0"):
        Gaussian(0.0)


def test_bernoulli_log_prob_is_minus_the_nll() -> None:
    """Bernoulli's log p(x|z) is -bernoulli_nll and its displayed image is sigmoid(logits)."""
    logits, x = 4 * torch.randn(3, 1, 28, 28), torch.bernoulli(torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(Bernoulli().log_prob(x, logits), -bernoulli_nll(logits, x))
    torch.testing.assert_close(Bernoulli().mean(logits), torch.sigmoid(logits))


def test_the_vae_scores_its_pixels_as_bernoullis() -> None:
    """VAE.likelihood is the Bernoulli likelihood named "bernoulli"."""
    model = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    assert isinstance(model.likelihood, Bernoulli) and model.likelihood.name == "bernoulli"
