"""The ELBO terms and the IWAE bound, against closed forms and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_core import VAE, VAEConfig, bernoulli_nll, elbo_terms, gaussian_kl, iwae_bound
from vae_core.objective import ElboTerms, reparameterize


def test_gaussian_kl_matches_torch_distributions() -> None:
    """The closed-form KL per dimension equals torch's KL(N(mu, sigma) || N(0, 1))."""
    mu, logvar = torch.randn(50, 8), torch.randn(50, 8)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_gaussian_kl_is_zero_only_at_the_prior() -> None:
    """KL vanishes at mu = 0, logvar = 0 and is positive elsewhere."""
    assert gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).abs().max() == 0
    assert (gaussian_kl(torch.tensor([[0.5]]), torch.tensor([[0.0]])) - 0.125).abs() < 1e-7


def test_bernoulli_nll_matches_torch_distributions() -> None:
    """-log p(x|z) summed over pixels equals torch's Bernoulli log-prob, for binary and grey x."""
    logits = 5 * torch.randn(4, 1, 28, 28)
    for x in (torch.bernoulli(torch.rand(4, 1, 28, 28)), torch.rand(4, 1, 28, 28)):
        expected = -Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(bernoulli_nll(logits, x), expected)


def test_bernoulli_nll_gradients_match_finite_differences() -> None:
    """The gradient: d/dlogits = sigmoid(l) - x per pixel (and d/dx = -l), checked numerically in
    float64 for binary and grey targets."""
    torch.manual_seed(0)
    logits = (4 * torch.randn(3, 1, 5, 5, dtype=torch.float64)).requires_grad_()
    for x in (
        torch.bernoulli(torch.rand(3, 1, 5, 5, dtype=torch.float64)),
        torch.rand(3, 1, 5, 5, dtype=torch.float64),
    ):
        assert torch.autograd.gradcheck(bernoulli_nll, (logits, x.requires_grad_()))
    (grad,) = torch.autograd.grad(bernoulli_nll(logits, x).sum(), logits)
    torch.testing.assert_close(grad, torch.sigmoid(logits) - x)


def test_bernoulli_nll_is_stable_for_extreme_logits() -> None:
    """Confident correct logits give ~0 nats and confident wrong ones give |logit| nats, never inf."""
    x = torch.ones(1, 1, 28, 28)
    assert bernoulli_nll(torch.full_like(x, 200.0), x).item() < 1e-6
    assert bernoulli_nll(torch.full_like(x, -200.0), x).item() == pytest.approx(200 * 784)


def test_reparameterize_has_the_posterior_moments() -> None:
    """z = mu + sigma * eps has mean mu and standard deviation sigma, and carries gradients."""
    torch.manual_seed(0)
    mu = torch.full((200_000, 1), 2.0, requires_grad=True)
    logvar = torch.full((200_000, 1), math.log(0.25), requires_grad=True)
    z = reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


def test_reparameterize_with_given_noise_is_mu_plus_sigma_eps() -> None:
    """Given eps, z = mu + exp(logvar / 2) eps exactly, also for eps with a leading sample dimension,
    and without eps it draws torch.randn_like(mu) from the global generator."""
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    eps = torch.randn(5, 4, 3)
    torch.testing.assert_close(reparameterize(mu, logvar, eps), mu + torch.exp(logvar / 2) * eps)
    torch.manual_seed(7)
    drawn = reparameterize(mu, logvar)
    torch.manual_seed(7)
    assert torch.equal(drawn, reparameterize(mu, logvar, torch.randn_like(mu)))


def test_elbo_terms_add_up() -> None:
    """ELBO = -(recon + KL) per image, with recon and KL matching their own functions."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, hidden=(16,)))
    x = torch.bernoulli(torch.rand(6, 1, 28, 28))
    terms = elbo_terms(model, x, sample=False)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(terms.kl, gaussian_kl(mu, logvar).sum(1))
    torch.testing.assert_close(terms.recon, bernoulli_nll(model.decode(mu), x))
    torch.testing.assert_close(terms.elbo, -(terms.recon + terms.kl))
    assert terms.loss(beta=0.0).item() == pytest.approx(terms.recon.mean().item())


def test_elbo_terms_score_bfloat16_outputs_in_the_data_precision() -> None:
    """Under bf16 autocast the network's outputs are bfloat16; the terms are still summed in float32
    (bfloat16 arithmetic would be off by up to a nat an image), from the same rounded outputs."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(6, 1, 28, 28))
    mu, logvar, x_logits = torch.randn(6, 3), torch.randn(6, 3), 4 * torch.randn(6, 1, 28, 28)
    rounded = [t.bfloat16() for t in (mu, logvar, x_logits)]
    terms = ElboTerms.of(x, *rounded)
    exact = ElboTerms.of(x, *(t.float() for t in rounded))
    assert terms.recon.dtype == terms.kl.dtype == torch.float32
    assert torch.equal(terms.recon, exact.recon) and torch.equal(terms.kl, exact.kl)


def _trained_like_model() -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, hidden=(32,))).eval()
    return model, torch.bernoulli(torch.rand(16, 1, 28, 28))


def test_iwae_bound_with_k1_is_the_elbo_in_expectation() -> None:
    """With k = 1 the IWAE bound is an unbiased single-sample estimate of the ELBO."""
    model, x = _trained_like_model()
    with torch.no_grad():
        elbo = torch.stack([elbo_terms(model, x).elbo.mean() for _ in range(1000)]).mean()
        iwae1 = torch.stack([iwae_bound(model, x, k=1).mean() for _ in range(1000)]).mean()
    assert iwae1.item() == pytest.approx(elbo.item(), abs=0.3)


def test_iwae_bound_is_above_the_elbo_and_tightens_with_k() -> None:
    """log p(x) >= IWAE_k, and IWAE_k grows with k (Burda et al. 2015, Theorem 1)."""
    model, x = _trained_like_model()
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = torch.stack([elbo_terms(model, x).elbo.mean() for _ in range(200)]).mean()
        bounds = [
            torch.stack([iwae_bound(model, x, k=k).mean() for _ in range(20)]).mean() for k in (5, 50, 500)
        ]
    assert elbo < bounds[0] < bounds[1] < bounds[2]


def test_iwae_bound_does_not_depend_on_the_chunk_size() -> None:
    """Chunking the k samples to bound memory gives the same estimate for the same noise."""
    model, x = _trained_like_model()
    torch.manual_seed(3)
    whole = iwae_bound(model, x, k=50, max_rows=10_000)
    torch.manual_seed(3)
    chunked = iwae_bound(model, x, k=50, max_rows=16 * 7)
    torch.testing.assert_close(whole, chunked)


def test_iwae_bound_is_exact_when_the_posterior_is_the_prior_and_z_is_ignored() -> None:
    """With q(z|x) = p(z) and p(x|z) free of z, every importance weight is p(x): the bound is exact."""
    model, x = _trained_like_model()
    with torch.no_grad():
        for layer in (model.encoder[-1], model.decoder[-2]):  # the last Linear of each
            layer.weight.zero_()
        model.encoder[-1].bias.zero_()
    exact = -bernoulli_nll(model.decode(torch.zeros(len(x), 4)), x)
    torch.testing.assert_close(iwae_bound(model, x, k=7), exact, atol=1e-3, rtol=1e-5)
