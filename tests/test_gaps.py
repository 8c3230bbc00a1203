"""The variational gap: the grid posterior against a linear-Gaussian model's closed forms, and on the
shipped 2-D checkpoint quadrature against IWAE, the identity, refinement and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vae_core import VAE, ImageSet, VAEConfig, eval_inputs, load_checkpoint
from vae_core.cli import main
from vae_core.gaps import explain, gaps, iwae_curve, posterior_grid, refine_posterior, sample_grid
from vae_core.likelihood import Gaussian

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"elbo", "elbo_refined", "log_px", "log_px_method", "approximation_gap", "amortization_gap"}


class LinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I) on 3×3 images, in float64, with a deliberately
    imperfect q: diagonal, shifted from the true posterior mean and too wide."""

    def __init__(self, sigma: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = 0.5 * torch.randn(9, 2, generator=g, dtype=torch.float64)  # (P, D)
        self.b = 0.3 * torch.randn(9, generator=g, dtype=torch.float64)  # (P,)
        self.sigma = sigma
        self.config = SimpleNamespace(latent_dim=2, image_shape=(1, 3, 3))
        self.likelihood = Gaussian(sigma)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact p(z|x) = N(m, S): S = (I + W^T W / sigma^2)^-1, m = S W^T (x - b) / sigma^2."""
        s = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + self.W.T @ self.W / self.sigma**2)
        return s @ self.W.T @ (x.flatten() - self.b) / self.sigma**2, s

    def log_px(self, x: Tensor) -> float:
        """log p(x) = log N(x; b, W W^T + sigma^2 I)."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(9, dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x.flatten()).item()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.posterior(x)
        return (m + 0.4 * s.diagonal().sqrt())[None], (s.diagonal().log() + 0.5)[None]

    def decode(self, z: Tensor) -> Tensor:
        return (z @ self.W.T + self.b).view(-1, 1, 3, 3)


def gaussian_kl(mq: Tensor, sq: Tensor, m: Tensor, s: Tensor) -> float:
    """KL(N(mq, sq) ‖ N(m, s)) in closed form for 2-D Gaussians."""
    s_inv, d = torch.linalg.inv(s), m - mq
    return 0.5 * (torch.trace(s_inv @ sq) + d @ s_inv @ d - 2 + torch.logdet(s) - torch.logdet(sq)).item()


@pytest.fixture
def linear() -> tuple[LinearGaussian, Tensor]:
    model = LinearGaussian()
    z = torch.tensor([0.7, -1.2], dtype=torch.float64)
    x = model.decode(z[None]) + model.sigma * torch.randn(1, 1, 3, 3, dtype=torch.float64)
    return model, x


def test_grid_posterior_matches_the_linear_gaussian_closed_form(linear) -> None:
    """Where the posterior holds mass, the grid's log p(z|x) equals log N(z; m, S) within 1e-8 nats."""
    model, x = linear
    grid = posterior_grid(model, x)
    m, s = model.posterior(x)
    z = torch.stack(torch.meshgrid(grid.z1, grid.z2, indexing="ij"), -1).double()
    exact = MultivariateNormal(m, s).log_prob(z)
    held = exact > exact.max() - 20  # within e^-20 of the mode
    assert held.sum() > 1000
    assert (grid.log_posterior - exact)[held].abs().max() < 1e-8
    assert grid.border_mass < 1e-6


def test_grid_log_px_and_kl_match_the_closed_forms(linear) -> None:
    """Quadrature log p(x) and KL(q ‖ p(z|x)) equal the closed forms within 1e-8, the identity holds."""
    model, x = linear
    grid = posterior_grid(model, x)
    mq, logvar = model.encode(x)
    m, s = model.posterior(x)
    assert grid.log_px == pytest.approx(model.log_px(x), abs=1e-8)
    assert grid.kl_q_post == pytest.approx(gaussian_kl(mq[0], logvar[0].exp().diag(), m, s), abs=1e-8)
    assert grid.kl_q_post > 0.1  # q is imperfect, so the check has something to measure
    assert abs(grid.residual) < 1e-8


def test_refinement_closes_the_amortization_gap_of_the_linear_model(linear) -> None:
    """On the linear model the best diagonal q* has KL(q* ‖ p) = the closed-form minimum over diagonal
    Gaussians, 0.5 log(prod diag(S^-1) det S), within 0.01 nats."""
    model, x = linear
    grid = posterior_grid(model, x)
    refined = refine_posterior(model, x, score=lambda mu, lv: torch.tensor([grid.elbo_of(mu[0], lv[0])]))
    _, s = model.posterior(x)
    best_kl = 0.5 * (torch.linalg.inv(s).diagonal().log().sum() + torch.logdet(s)).item()
    assert refined.improved.all()
    assert grid.log_px - refined.elbo.item() == pytest.approx(best_kl, abs=0.01)


def test_posterior_grid_needs_a_2d_latent_and_one_image() -> None:
    """A 5-D model and a batch of two images are refused with messages that name the problem."""
    with pytest.raises(ValueError, match="latent_dim=5"):
        posterior_grid(VAE(VAEConfig(latent_dim=5, hidden=(8,))), torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"one image of shape \(1, C, H, W\), got \(2, 1, 28, 28\)"):
        posterior_grid(VAE(VAEConfig(latent_dim=2, hidden=(8,))), torch.zeros(2, 1, 28, 28))


def test_iwae_curve_reuses_nested_samples() -> None:
    """The curve's bound for k = max(ks) equals an IWAE computed from the same samples, and k = 1 is
    a single log weight: nested prefixes of one draw."""
    model = VAE(VAEConfig(latent_dim=3, hidden=(16,)))
    x = torch.bernoulli(torch.rand(2, 1, 28, 28))
    curve = iwae_curve(model, x, (1, 10), seed=3)
    assert curve.shape == (2, 2) and torch.isfinite(curve).all()
    torch.testing.assert_close(iwae_curve(model, x, (10,), seed=3)[0], curve[1])
    with pytest.raises(ValueError, match="positive sample counts"):
        iwae_curve(model, x, (0, 5))


def test_grid_moments_match_the_linear_gaussian_posterior(linear) -> None:
    """The grid's mean is the exact posterior mean and its covariance the exact one plus each cell's
    own variance, width² / 12 per axis, within 1e-8."""
    model, x = linear
    grid = posterior_grid(model, x)
    m, s = model.posterior(x)
    mean, cov = grid.moments()
    torch.testing.assert_close(mean, m, atol=1e-8, rtol=0)
    torch.testing.assert_close(cov - torch.diag(grid.cell_widths**2 / 12), s, atol=1e-8, rtol=0)


def assert_samples_follow(grid, samples: Tensor) -> None:
    """Sample mean within 4 standard errors of the grid's, each covariance entry within 4 of its
    standard errors (Gaussian approximation: var(s_ij) = (S_ij² + S_ii S_jj) / N), all in the window."""
    mean, cov = grid.moments()
    n = len(samples)
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((samples.double().mean(0) - mean).abs() < 4 * se_mean).all()
    se_cov = ((cov**2 + torch.outer(cov.diagonal(), cov.diagonal())) / n).sqrt()
    assert ((torch.cov(samples.double().T) - cov).abs() < 4 * se_cov).all()
    low, high = torch.tensor(grid.window).view(2, 2).T
    assert ((samples >= low.float()) & (samples <= high.float())).all()


def test_sample_grid_draws_from_the_grid_posterior(linear) -> None:
    """20000 samples of the linear model's grid posterior have its mean and covariance, the same seed
    gives the same samples and another seed others."""
    model, x = linear
    grid = posterior_grid(model, x)
    samples = sample_grid(grid, 20_000, seed=1)
    assert samples.shape == (20_000, 2)
    assert_samples_follow(grid, samples)
    assert torch.equal(sample_grid(grid, 20_000, seed=1), samples)
    assert not torch.equal(sample_grid(grid, 20_000, seed=2), samples)


def test_credible_levels_are_the_gaussian_highest_density_contours(linear) -> None:
    """For a 2-D Gaussian the region holding mass p is log N(z) >= log N(m) + log(1 - p): the grid's
    levels agree within 0.03 nats at n = 200 and 0.002 at n = 800 (the cells that straddle the contour
    make the error, so it shrinks as the cells do)."""
    model, x = linear
    _, s = model.posterior(x)
    peak = -math.log(2 * math.pi) - 0.5 * torch.logdet(s).item()
    masses = (0.5, 0.9, 0.99)
    expected = torch.tensor([peak + math.log(1 - p) for p in masses], dtype=torch.float64)
    for n, tolerance in ((200, 0.03), (800, 0.002)):
        levels = posterior_grid(model, x, n=n).credible_levels(masses)
        torch.testing.assert_close(levels, expected, atol=tolerance, rtol=0)


def test_explain_on_the_linear_model_uses_quadrature(linear) -> None:
    """For a 2-D latent, explain's log p(x) is the closed form, its ELBO the grid's, and the refined q*
    closes the amortisation gap down to the diagonal-Gaussian minimum (within 0.01 nats)."""
    model, x = linear
    result = explain(model, x, ks=(1, 10))
    _, s = model.posterior(x)
    best_kl = 0.5 * (torch.linalg.inv(s).diagonal().log().sum() + torch.logdet(s)).item()
    assert result.log_px_method == "quadrature"
    assert result.log_px == pytest.approx(model.log_px(x), abs=1e-8)
    assert result.elbo == pytest.approx(result.grid.elbo, abs=1e-12)
    assert result.approximation_gap == pytest.approx(best_kl, abs=0.01)
    assert result.amortization_gap > 0 and result.iwae.shape == (2,)


def test_explain_without_a_grid_uses_the_iwae_bound() -> None:
    """For a 3-D latent log p(x) is IWAE at the largest k (the curve's last point), there is no grid,
    refinement does not lower the ELBO, and progress runs from 0 to 1 in order."""
    model = VAE(VAEConfig(latent_dim=3, hidden=(16,)))
    x = torch.bernoulli(torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    seen = []
    result = explain(model, x, steps=20, ks=(1, 10, 100), progress=lambda f, stage: seen.append(f))
    assert result.grid is None and result.log_px_method == "iwae-k100"
    assert result.log_px == result.iwae[-1].item()
    assert result.amortization_gap >= 0 and result.mu.shape == result.mu_refined.shape == (3,)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


# ---- the shipped 2-D checkpoint ------------------------------------------------------------------

N_IMAGES = 16


@pytest.fixture(scope="module")
def mnist_2d(mnist_test: ImageSet) -> tuple[VAE, Tensor, list]:
    model = load_checkpoint(ROOT / "checkpoints" / "mnist-2d")
    x = eval_inputs(mnist_test, model.meta.spec.data.binarize)[:N_IMAGES]
    return model, x, [posterior_grid(model, x[i : i + 1]) for i in range(N_IMAGES)]


CLOSE_Q = 0.5  # nats of KL(q ‖ p(z|x)) below which q is a good importance proposal


@pytest.mark.slow
def test_quadrature_log_px_agrees_with_iwae_5000(mnist_2d) -> None:
    """Per image, quadrature log p(x) agrees with IWAE k=5000 within 0.1 nats wherever q is close to
    the true posterior (KL(q ‖ p(z|x)) < 0.5 nats: 7 of the first 16 test images).

    Elsewhere IWAE-5000 is no reference: on image 8 q sits on another mode than p(z|x) and IWAE is 84
    nats low; on image 11 q is narrower than p(z|x), the weights are heavy-tailed and IWAE is 1.2 high."""
    model, x, grids = mnist_2d
    iwae = iwae_curve(model, x, (5000,))[0]
    close = [i for i, g in enumerate(grids) if g.kl_q_post < CLOSE_Q]
    assert len(close) >= 6, close
    for i in close:
        assert abs(iwae[i].item() - grids[i].log_px) < 0.1, (i, iwae[i].item(), grids[i].log_px)


@pytest.mark.slow
def test_identity_holds_on_the_grid(mnist_2d) -> None:
    """log p(x) - (ELBO + KL(q ‖ p(z|x))) is below 1e-3 nats and the window holds the posterior."""
    _, _, grids = mnist_2d
    for g in grids:
        assert abs(g.residual) < 1e-3 and g.border_mass < 1e-6
        assert g.kl_q_post >= 0 and g.elbo <= g.log_px


@pytest.mark.slow
def test_grid_is_converged_at_n_200(mnist_2d) -> None:
    """Doubling the grid resolution on the same window moves log p(x) by less than 0.01 nats."""
    model, x, grids = mnist_2d
    for i in (0, 8):
        finer = posterior_grid(model, x[i : i + 1], n=400, window=grids[i].window)
        assert abs(finer.log_px - grids[i].log_px) < 0.01


@pytest.mark.slow
def test_refinement_never_lowers_the_elbo(mnist_2d) -> None:
    """q* chosen by the Monte-Carlo ELBO scores at least the encoder's q by exact quadrature (within
    0.02 nats) and gains on average; chosen by quadrature, never less."""
    model, x, grids = mnist_2d
    mc = refine_posterior(model, x)
    exact = [g.elbo_of(m, lv) for g, m, lv in zip(grids, mc.mu, mc.logvar, strict=True)]
    gain = torch.tensor([e - g.elbo for e, g in zip(exact, grids, strict=True)])
    assert gain.min() > -0.02 and gain.mean() > 0.5
    result = gaps(model, x[:4])
    assert (result.amortization_gap >= 0).all()


@pytest.mark.slow
def test_iwae_curve_rises_in_expectation_towards_log_px(mnist_2d) -> None:
    """Averaged over 16 independent curves per image, IWAE-k does not fall as k grows and stays below
    log p(x), both up to 3 standard errors."""
    model, x, grids = mnist_2d
    reps = 16
    ks = (1, 5, 50, 500, 5000)
    curves = iwae_curve(model, x[:4].repeat_interleave(reps, 0), ks).view(len(ks), 4, reps)
    mean, se = curves.mean(-1), curves.std(-1) / math.sqrt(reps)
    for i in range(4):
        for a in range(len(ks) - 1):
            assert mean[a + 1, i] >= mean[a, i] - 3 * math.hypot(se[a, i], se[a + 1, i]) - 1e-6
        assert (mean[:, i] <= grids[i].log_px + 3 * se[:, i] + 1e-6).all()


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist-2d", "mnist-best"])
def test_evaluate_gaps_json(name: str, mnist_test: ImageSet, capsys: pytest.CaptureFixture) -> None:
    """`evaluate --gaps --n 5 --json` prints finite means under the documented keys: quadrature and the
    identity residual for the 2-D model, IWAE k=5000 and no residual otherwise."""
    assert main(["evaluate", str(ROOT / "checkpoints" / name), "--gaps", "--n", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    two_d = name == "mnist-2d"
    assert out.keys() == (KEYS | {"identity_residual"} if two_d else KEYS)
    assert out["log_px_method"] == ("quadrature" if two_d else "iwae-k5000")
    assert all(math.isfinite(v) for k, v in out.items() if k != "log_px_method")
    assert out["amortization_gap"] >= 0
    assert out["approximation_gap"] == pytest.approx(out["log_px"] - out["elbo_refined"])


@pytest.mark.slow
def test_sample_grid_follows_a_non_gaussian_posterior(mnist_2d) -> None:
    """On the 2-D checkpoint's images 0 and 8 (the posterior there is not Gaussian), 20000 grid samples
    have the grid's mean and covariance."""
    _, _, grids = mnist_2d
    for i in (0, 8):
        assert_samples_follow(grids[i], sample_grid(grids[i], 20_000, seed=i))
