"""The pixel likelihoods: log p(x|z) against torch.distributions and the objective's Bernoulli NLL."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, SigmoidTransform, TransformedDistribution, Uniform

from vae_core import VAE, VAEConfig, bernoulli_nll, fast, spec
from vae_core.likelihood import LIKELIHOODS, Bernoulli, DiscretizedLogistic, Gaussian, bits_per_dim, get
from vae_core.spec import RunSpec


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


# ---------------------------------------------------------------- the likelihood family

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every value an 8-bit pixel takes


def _logistic_params(n: int = 6, c: int = 3, side: int = 4) -> torch.Tensor:
    """Random [locations; log-scales] (n, 2c, side, side) in float64, from far outside [0, 1] and
    from the sharpest to very wide scales."""
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(n, c, side, side, generator=g, dtype=torch.float64) * 3 - 1
    log_scale = torch.rand(n, c, side, side, generator=g, dtype=torch.float64) * 12 - 9
    return torch.cat([loc, log_scale], dim=1)


def test_discretized_logistic_pmf_sums_to_one_over_the_256_levels() -> None:
    """For random locations and scales, the 256 bin probabilities of every pixel sum to 1."""
    params = _logistic_params()
    shape = (params.shape[0], params.shape[1] // 2, *params.shape[2:])
    logistic = DiscretizedLogistic()
    total = sum(
        logistic.log_prob_pixels(torch.full(shape, v.item(), dtype=torch.float64), params).exp()
        for v in LEVELS
    )
    torch.testing.assert_close(total, torch.ones(shape, dtype=torch.float64), atol=1e-5, rtol=0)


def test_discretized_logistic_bins_match_torch_distributions() -> None:
    """Each bin's probability is the CDF difference of torch's logistic (Uniform pushed through the
    inverse sigmoid and an affine map) across the bin, with the edge bins taking the tails."""
    g = torch.Generator().manual_seed(1)
    loc = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    log_scale = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) * 3 - 5
    params = torch.cat([loc, log_scale], dim=1)
    logistic_cdf = TransformedDistribution(
        Uniform(torch.zeros_like(loc), torch.ones_like(loc)),
        [SigmoidTransform().inv, AffineTransform(loc, log_scale.exp())],
    ).cdf
    half = 0.5 / 255
    for v in LEVELS:
        x = torch.full_like(loc, v.item())
        upper = torch.ones_like(loc) if v == 1 else logistic_cdf(x + half)
        lower = torch.zeros_like(loc) if v == 0 else logistic_cdf(x - half)
        got = DiscretizedLogistic().log_prob_pixels(x, params).exp()
        torch.testing.assert_close(got, upper - lower, atol=1e-9, rtol=1e-6)


def test_discretized_logistic_is_finite_with_finite_gradients_at_extremes() -> None:
    """Locations far from a pixel and the sharpest scales give finite log-probabilities and gradients."""
    x = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 128 / 255]).view(1, 1, 2, 3)
    loc = torch.tensor([50.0, -50.0, 1e3, -1e3, 0.999, 0.0]).view(1, 1, 2, 3)
    log_scale = torch.tensor([-20.0, -20.0, 5.0, -7.0, -7.0, 30.0]).view(1, 1, 2, 3)
    params = torch.cat([loc, log_scale], dim=1).requires_grad_()
    log_p = DiscretizedLogistic().log_prob(x, params)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


def test_bits_per_dim_of_a_uniform_model_is_eight() -> None:
    """A model giving each of the 256 levels probability 1/256 scores 8 bits per dimension."""
    shape = (3, 32, 32)
    nll = math.prod(shape) * math.log(256)
    assert bits_per_dim(nll, shape) == pytest.approx(8.0, abs=1e-12)


def test_logistic_mean_is_the_clamped_location_and_samples_are_8_bit() -> None:
    """`mean` shows the locations clamped to [0, 1]; samples lie on the 256 levels, near a sharp location."""
    loc = torch.tensor([-0.5, 0.25, 0.5, 1.7]).view(1, 1, 2, 2)
    params = torch.cat([loc, torch.full_like(loc, -6.0)], dim=1)
    logistic = DiscretizedLogistic()
    torch.testing.assert_close(logistic.mean(params), loc.clamp(0, 1))
    x = logistic.sample(params.expand(500, -1, -1, -1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x * 255, (x * 255).round())
    torch.testing.assert_close(x.mean(0, keepdim=True), loc.clamp(0, 1), atol=0.01, rtol=0)


def test_param_channels_and_bits_per_dim_applies() -> None:
    """Bernoulli takes one decoder channel per image channel and no bits/dim; the logistic two, and
    bits/dim."""
    assert (Bernoulli().param_channels(3), Bernoulli().bits_per_dim_applies) == (3, False)
    assert (DiscretizedLogistic().param_channels(3), DiscretizedLogistic().bits_per_dim_applies) == (6, True)


def test_registry_names_the_spec_choices() -> None:
    """The registry holds exactly the likelihoods the spec offers, each under its own name; an unknown
    one is refused."""
    assert tuple(LIKELIHOODS) == spec.LIKELIHOODS
    assert all(get(name).name == name for name in LIKELIHOODS)
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'; choose one of bernoulli, logistic"):
        get("poisson")


def test_a_logistic_vae_decodes_two_parameters_per_channel_and_scores_with_them() -> None:
    """A logistic VAE's decoder gives 2C channels, its likelihood is the logistic, and its ELBO's
    recon is the logistic's -log p(x|z) (with the fast paths on, too)."""
    config = VAEConfig(latent_dim=2, hidden=(8,), likelihood="logistic", image_shape=(3, 16, 16))
    model = VAE(config)
    x = torch.randint(0, 256, (4, 3, 16, 16)) / 255
    mu, _ = model.encode(x)
    params = model.decode(mu)
    assert params.shape == (4, 6, 16, 16) and isinstance(model.likelihood, DiscretizedLogistic)
    terms = fast.elbo_terms(model, x, sample=False)
    torch.testing.assert_close(terms.recon, -DiscretizedLogistic().log_prob(x, params))
    assert not fast.writes_out_gradient(model)  # the written-out backprop is Bernoulli's alone
    assert fast.writes_out_gradient(VAE(VAEConfig(hidden=(8,)))) == fast.enabled()


def test_logistic_with_dynamic_binarisation_is_refused() -> None:
    """Binarised inputs with an 8-bit likelihood are refused with a message saying what to pass."""
    with pytest.raises(ValueError, match=r"logistic likelihood scores 8-bit pixels.*pass --binarize none"):
        RunSpec(model=VAEConfig(likelihood="logistic"))


def test_an_old_spec_without_a_likelihood_loads_as_bernoulli() -> None:
    """A stored spec from before likelihoods (no `likelihood` key) is a Bernoulli model."""
    stored = RunSpec().to_dict()
    del stored["model"]["likelihood"]
    assert RunSpec.from_dict(stored).model.likelihood == "bernoulli"
