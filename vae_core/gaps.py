"""The variational gap: the exact posterior of a 2-D model, log p(x) = ELBO + KL(q ‖ p(z|x)), and
the split of the gap into its approximation and amortisation parts (Cremer, Li & Duvenaud 2018).

For one image x and the encoder's q(z|x) = N(mu, diag(sigma^2)):

    log p(x) = ELBO(q) + KL(q(z|x) ‖ p(z|x)),   ELBO(q) = E_q[log p(x|z)] - KL(q ‖ p(z)),

so the ELBO is a lower bound on log p(x) because a KL is never negative. The gap log p(x) - ELBO has
two causes. Even the best Gaussian q* for this image misses the true posterior: the approximation gap
log p(x) - ELBO(q*). The encoder, shared by all images, does not find q*: the amortisation gap
ELBO(q*) - ELBO(q). `refine_posterior` finds q* by gradient ascent on this image's ELBO.

log p(x) comes from quadrature on a grid for a 2-D latent (`posterior_grid`) and from the IWAE bound
with many samples otherwise (a lower bound, so the approximation gap is then slightly underestimated).
Every function scores images with `model.likelihood.log_prob(x, model.decode(z))`, so it works for
any pixel likelihood. All values are nats per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vae_core.evaluation import seeded
from vae_core.objective import LOG_2PI, gaussian_kl

MAX_ROWS = 10_000  # latents decoded at once
GRID_ROWS = 1024  # latents decoded at once on a grid: their logits stay in the CPU cache (bench/)
Q_WINDOW_SIGMAS = 7.0  # the grid holds q's mu ± 7 sigma: q's mass outside is below 1e-11
PRIOR_BULK = 4.0  # the coarse scan for posterior mass covers the prior's ±4 sigma box
SCAN_POINTS = 32  # per axis of the coarse scan
SCAN_MASS = 1e-8  # scan cells holding more posterior mass than this enter the window
FIT_POINTS = 40  # per axis of the cheap scan that fits the window before the full grid is computed
BORDER_MASS = 1e-6  # posterior mass allowed in the grid's border band before the window is widened
FIT_MASS = BORDER_MASS / 10  # a side whose band of the fitting scan holds more than this is extended
EXTEND = 0.5  # a leaking side moves out by this fraction of the window's width on its axis
MAX_WIDENINGS = 4
Q_MASS_TOLERANCE = 1e-3  # a q whose grid mass is further than this from 1 cannot be scored on the grid
CREDIBLE_MASSES = (0.5, 0.9, 0.99)  # the highest-density regions whose contours the Posterior page draws
IWAE_KS = (1, 5, 50, 500, 5000)
REFINE_STEPS = 300
REFINE_LR = 0.05
REFINE_SAMPLES = 16  # reparameterised samples per refinement step
PROGRESS_EVERY = 10  # refinement steps between progress reports
ELBO_SAMPLES = 1000  # samples of the Monte-Carlo ELBO that compares q with q*
GAPS_IMAGES = 100  # test images `evaluate --gaps` measures unless told
GAPS_K = max(IWAE_KS)  # importance samples of the log p(x) estimate without a grid


# ---- densities ------------------------------------------------------------------------------------


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis: (..., D) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def log_prior(z: Tensor) -> Tensor:
    """log p(z) for the standard-normal prior: (..., D) -> (...)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


Progress = Callable[[float], None]  # told the fraction of a computation done, from 0 to 1


def log_likelihood(
    model, x: Tensor, z: Tensor, *, max_rows: int = MAX_ROWS, progress: Progress | None = None
) -> Tensor:
    """log p(x_b | z_sb) for S latents per image: x (B, C, H, W), z (S, B, D) -> (S, B).

    Decodes in chunks of at most `max_rows` latents, so memory does not grow with S; `progress` is
    told the fraction of latents decoded after each chunk."""
    per_chunk = max(1, max_rows // x.shape[0])
    parts = []
    for start in range(0, z.shape[0], per_chunk):
        zs = z[start : start + per_chunk]  # (s, B, D)
        # one image: a broadcast view (stride 0), no copy of it per latent
        targets = x.expand(zs.shape[0], *x.shape[1:]) if x.shape[0] == 1 else x.repeat(zs.shape[0], 1, 1, 1)
        params = model.decode(zs.flatten(0, 1))
        parts.append(model.likelihood.log_prob(targets, params).view(zs.shape[0], -1))
        if progress is not None:
            progress(min(1.0, (start + per_chunk) / z.shape[0]))
    return torch.cat(parts)


# ---- the exact posterior of a 2-D model -----------------------------------------------------------


@dataclass(frozen=True)
class PosteriorGrid:
    """p(z|x) and q(z|x) on an n×n grid of cell centres; entry [i, j] is at z = (z1[i], z2[j]).

    Integrals are midpoint-rule sums over cells of area `cell_area`, in float64."""

    z1: Tensor  # (n,)
    z2: Tensor  # (n,)
    log_likelihood: Tensor  # (n, n) log p(x|z)
    log_posterior: Tensor  # (n, n) log p(z|x), a density: sums to 1 after times cell_area
    log_q: Tensor  # (n, n) log q(z|x) of the encoder
    mu: Tensor  # (2,) the encoder's q
    logvar: Tensor  # (2,)
    log_px: float  # log p(x) = log ∑ p(x|z) p(z) ΔA
    elbo: float  # ELBO(q) = E_q[log p(x|z)] (quadrature) - KL(q ‖ p(z)) (closed form)
    kl_q_post: float  # KL(q ‖ p(z|x)), quadrature
    residual: float  # log p(x) - (ELBO + KL(q ‖ p(z|x))): the grid's error, ~0
    window: tuple[float, float, float, float]  # (z1_low, z1_high, z2_low, z2_high)
    cell_area: float
    border_mass: float  # posterior mass in the border band: small means the window holds p(z|x)

    def log_density(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """log N(z; mu, diag(exp(logvar))) at every grid point: (2,), (2,) -> (n, n)."""
        z = torch.stack(torch.meshgrid(self.z1, self.z2, indexing="ij"), -1)  # (n, n, 2)
        return log_normal(z, mu.to(z), logvar.to(z))

    def elbo_of(self, mu: Tensor, logvar: Tensor) -> float:
        """ELBO of any Gaussian q = N(mu, diag(exp(logvar))) by quadrature on this grid; NaN when the
        grid does not hold q's mass (the grid cannot score such a q).

        E_q[log p(x|z)] is the midpoint sum of q(z) log p(x|z) ΔA; KL(q ‖ p(z)) is closed form."""
        q_mass = self.log_density(mu, logvar).exp() * self.cell_area  # (n, n)
        if abs(q_mass.sum().item() - 1.0) > Q_MASS_TOLERANCE:
            return math.nan
        kl_prior = gaussian_kl(mu.double(), logvar.double()).sum()
        return ((q_mass * self.log_likelihood).sum() - kl_prior).item()

    @property
    def cell_widths(self) -> Tensor:
        """Each cell's width along z1 and z2: (2,)."""
        low, high = torch.tensor(self.window, dtype=torch.float64).view(2, 2).T
        return (high - low) / torch.tensor([len(self.z1), len(self.z2)])

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean (2,) and covariance (2, 2) of the grid's posterior, a density that is constant in each
        cell: the midpoint sums plus each cell's own variance, width² / 12 per axis."""
        mass = (self.log_posterior.exp() * self.cell_area).flatten()  # (n * n,)
        mass = mass / mass.sum()
        z = torch.stack(torch.meshgrid(self.z1, self.z2, indexing="ij"), -1).reshape(-1, 2).double()
        mean = mass @ z
        centred = z - mean
        return mean, (mass[:, None] * centred).T @ centred + torch.diag(self.cell_widths**2 / 12)

    def credible_levels(self, masses: tuple[float, ...] = CREDIBLE_MASSES) -> Tensor:
        """The log densities whose superlevel sets {z: log p(z|x) >= level} hold each posterior mass:
        the contours of the highest-density regions, (len(masses),)."""
        log_density = self.log_posterior.flatten().sort(descending=True).values  # (n * n,)
        cell_mass = log_density.exp() * self.cell_area
        held = cell_mass.cumsum(0) - cell_mass / 2  # mass above each cell's middle: a cell is half in
        target = torch.tensor(masses, dtype=held.dtype)
        right = torch.searchsorted(held, target).clamp(1, len(held) - 1)  # linear interpolation between
        t = ((target - held[right - 1]) / (held[right] - held[right - 1])).clamp(0, 1)  # two cells
        return torch.lerp(log_density[right - 1], log_density[right], t)


def sample_grid(grid: PosteriorGrid, n: int, *, seed: int = 0) -> Tensor:
    """n samples z ~ p(z|x) from the grid's posterior: a cell drawn with probability its mass, then a
    point uniform in that cell, so the samples follow the grid's piecewise-constant density: (n, 2)."""
    generator = torch.Generator().manual_seed(int(seed))
    mass = grid.log_posterior.exp().flatten()  # (n1 * n2,) ∝ cell probabilities
    cells = torch.multinomial(mass, n, replacement=True, generator=generator)  # (n,)
    i, j = cells // len(grid.z2), cells % len(grid.z2)
    centres = torch.stack([grid.z1[i], grid.z2[j]], -1).double()  # (n, 2)
    jitter = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
    return (centres + jitter * grid.cell_widths).float()


def _q_box(mu: Tensor, logvar: Tensor) -> Tensor:
    """q's mu ± Q_WINDOW_SIGMAS sigma per axis: (2,), (2,) -> (2, 2) rows [low, high]."""
    half = Q_WINDOW_SIGMAS * torch.exp(0.5 * logvar)
    return torch.stack([mu - half, mu + half], -1)


def _cell_centres(window: Tensor, n: int) -> tuple[Tensor, Tensor, float]:
    """n cell centres per axis of window (2, 2) and the cell area."""
    width = window[:, 1] - window[:, 0]  # (2,)
    steps = (torch.arange(n, dtype=window.dtype) + 0.5) / n  # (n,)
    z1, z2 = (window[d, 0] + width[d] * steps for d in range(2))
    return z1, z2, (width[0] * width[1]).item() / n**2


def _log_likelihood_grid(
    model, x: Tensor, z1: Tensor, z2: Tensor, dtype: torch.dtype, progress: Progress | None = None
) -> Tensor:
    """log p(x|z) on the grid z1 × z2: (n1, n2), decoded in the model's dtype, returned in float64."""
    z = torch.stack(torch.meshgrid(z1, z2, indexing="ij"), -1)  # (n1, n2, 2)
    flat = z.reshape(-1, 1, 2).to(device=x.device, dtype=dtype)  # (n1 * n2, 1, 2): one image
    log_lik = log_likelihood(model, x, flat, max_rows=GRID_ROWS, progress=progress)  # (n1 * n2, 1)
    return log_lik.view(len(z1), len(z2)).double().cpu()


def _log_mass(model, x: Tensor, window: Tensor, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Each cell's unnormalised posterior mass log p(x, z_c) ΔA on an n×n scan of window (2, 2), and
    the cell centres: (n, n), (n, n, 2)."""
    z1, z2, area = _cell_centres(window, n)
    z = torch.stack(torch.meshgrid(z1, z2, indexing="ij"), -1)  # (n, n, 2)
    return _log_likelihood_grid(model, x, z1, z2, dtype) + log_prior(z).double() + math.log(area), z


def _scan_window(model, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """The window: q's box, grown to hold every cell of a coarse scan of the prior's bulk that holds
    posterior mass (so a mode q missed is not cut off).

    Crude masses: each scan cell p(x, z_c) ΔA, and q's region p(x, mu) 2π sigma1 sigma2 (a Laplace
    approximation with q's covariance, since a sharp posterior can fall between scan points)."""
    q_box = _q_box(mu, logvar)
    bulk = torch.tensor([[-PRIOR_BULK, PRIOR_BULK]] * 2, dtype=mu.dtype)
    scan = torch.stack([torch.minimum(q_box[:, 0], bulk[:, 0]), torch.maximum(q_box[:, 1], bulk[:, 1])], -1)
    log_mass, z = _log_mass(model, x, scan, SCAN_POINTS, mu.dtype)
    at_mu = _log_likelihood_grid(model, x, mu[:1], mu[1:], mu.dtype).squeeze() + log_prior(mu).double()
    log_mass_q = at_mu + math.log(2 * math.pi) + 0.5 * logvar.sum().double()
    total = torch.logaddexp(torch.logsumexp(log_mass.flatten(), 0), log_mass_q)
    held = z[(log_mass - total).exp() > SCAN_MASS]  # (m, 2)
    if len(held) == 0:
        return q_box
    half_cell = (scan[:, 1] - scan[:, 0]) / (2 * SCAN_POINTS)
    low = torch.minimum(q_box[:, 0], held.min(0).values - half_cell)
    high = torch.maximum(q_box[:, 1], held.max(0).values + half_cell)
    return torch.stack([low, high], -1)


def _band(n: int) -> int:
    """Cells per side of the border band: n // 50 (2% of the width), at least one."""
    return max(1, n // 50)


def _border_mass(log_posterior: Tensor, cell_area: float) -> float:
    """Posterior mass in the outermost n // 50 cells (at least one) on every side."""
    band = _band(log_posterior.shape[0])
    inner = log_posterior[band:-band, band:-band]
    return (1.0 - (inner.exp().sum() * cell_area)).clamp(min=0.0).item()


def _side_masses(log_mass: Tensor) -> Tensor:
    """Normalised mass in the border band of each side: log masses (n, n) -> (2, 2) [axis, low/high]."""
    mass = (log_mass - torch.logsumexp(log_mass.flatten(), 0)).exp()
    band = _band(mass.shape[0])
    return torch.stack(
        [mass[:band].sum(), mass[-band:].sum(), mass[:, :band].sum(), mass[:, -band:].sum()]
    ).view(2, 2)


def _extend(window: Tensor, leaking: Tensor) -> Tensor:
    """Move each leaking side (2, 2) of window (2, 2) out by EXTEND times the width of its axis."""
    width = (window[:, 1] - window[:, 0])[:, None]  # (2, 1)
    return window + EXTEND * width * leaking * torch.tensor([-1.0, 1.0], dtype=window.dtype)


def _fit_window(model, x: Tensor, window: Tensor, dtype: torch.dtype) -> Tensor:
    """Extend the sides of window whose border band holds posterior mass on a cheap FIT_POINTS² scan,
    until none does: the full grid is then computed once, on its final window, in most cases."""
    for _ in range(MAX_WIDENINGS):
        leaking = _side_masses(_log_mass(model, x, window, FIT_POINTS, dtype)[0]) > FIT_MASS
        if not leaking.any():
            break
        window = _extend(window, leaking)
    return window


def posterior_grid(
    model,
    x: Tensor,
    *,
    n: int = 200,
    window: tuple[float, float, float, float] | None = None,
    progress: Progress | None = None,
) -> PosteriorGrid:
    """The exact posterior of a 2-D latent model for one image x (1, C, H, W), on an n×n grid.

    log p(x, z) = log p(x|z) + log p(z) is evaluated at the cell centres. With ΔA the cell area,
    log p(x) = logsumexp(log p(x, z)) + log ΔA (midpoint quadrature) and the exact log posterior is
    log p(z|x) = log p(x, z) - log p(x). KL(q ‖ p(z|x)) = ∑ q(z) (log q(z) - log p(z|x)) ΔA, and the
    ELBO is E_q[log p(x|z)] by the same quadrature minus KL(q ‖ p(z)) in closed form. The identity
    residual log p(x) - (ELBO + KL) is then algebraically (1 - ∑ q ΔA) log p(x) plus the quadrature
    error of KL(q ‖ p(z)): it measures how well the grid holds and resolves q, not Monte-Carlo noise.

    The window (unless given as (z1_low, z1_high, z2_low, z2_high)) is q's mu ± 7 sigma grown to hold
    the posterior mass found by a coarse scan of the prior's bulk; a cheap 40×40 scan then moves out
    each side whose border band holds posterior mass. If more than 1e-6 of the full grid's posterior
    mass still lies in its border band, the leaking sides move out and the grid is computed again.
    `progress` is told the fraction of the full grid decoded.
    """
    if model.config.latent_dim != 2:
        raise ValueError(f"posterior_grid needs a 2-D latent space, got latent_dim={model.config.latent_dim}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"posterior_grid takes one image of shape (1, C, H, W), got {tuple(x.shape)}")
    with torch.inference_mode():
        mu, logvar = (t[0].cpu() for t in model.encode(x))  # (2,), (2,)
        if window is not None:
            return _grid(model, x, mu, logvar, torch.tensor(window, dtype=mu.dtype).view(2, 2), n, progress)
        bounds = _fit_window(model, x, _scan_window(model, x, mu, logvar), mu.dtype)
        for _ in range(MAX_WIDENINGS + 1):
            grid = _grid(model, x, mu, logvar, bounds, n, progress)
            if grid.border_mass <= BORDER_MASS:
                break
            sides = _side_masses(grid.log_posterior)
            bounds = _extend(
                bounds, sides > BORDER_MASS / 4 if (sides > BORDER_MASS / 4).any() else sides >= 0
            )
    return grid


def _grid(
    model, x: Tensor, mu: Tensor, logvar: Tensor, window: Tensor, n: int, progress: Progress | None = None
) -> PosteriorGrid:
    """Everything `posterior_grid` returns, on one fixed window (2, 2)."""
    z1, z2, area = _cell_centres(window, n)
    z = torch.stack(torch.meshgrid(z1, z2, indexing="ij"), -1).double()  # (n, n, 2)
    log_lik = _log_likelihood_grid(model, x, z1, z2, mu.dtype, progress)  # (n, n)
    log_joint = log_lik + log_prior(z)
    log_px = (torch.logsumexp(log_joint.flatten(), 0) + math.log(area)).item()
    log_post = log_joint - log_px
    log_q = log_normal(z, mu.double(), logvar.double())
    q_mass = log_q.exp() * area
    kl_q_post = (q_mass * (log_q - log_post)).sum().item()
    grid = PosteriorGrid(
        z1, z2, log_lik, log_post, log_q, mu, logvar, log_px, math.nan, kl_q_post, math.nan,
        tuple(window.flatten().tolist()), area, _border_mass(log_post, area),
    )  # fmt: skip
    elbo = grid.elbo_of(mu, logvar)
    return PosteriorGrid(**{**grid.__dict__, "elbo": elbo, "residual": log_px - (elbo + kl_q_post)})


# ---- importance sampling --------------------------------------------------------------------------


def log_weights(model, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """log p(x, z_s) - log q(z_s|x) at z_s = mu + sigma eps_s: eps (S, B, D) -> (S, B)."""
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)  # in terms of eps: no division by sigma
    return log_likelihood(model, x, z) + log_prior(z) - log_q


@torch.no_grad()
def iwae_curve(
    model, x: Tensor, ks: tuple[int, ...] = IWAE_KS, *, q: tuple[Tensor, Tensor] | None = None, seed: int = 0
) -> Tensor:
    """The IWAE bound log (1/k) ∑_{s<k} p(x, z_s) / q(z_s|x) for each k: x (B, ...) -> (len(ks), B).

    One set of max(ks) samples z_s ~ q(z|x) is drawn and the bound for k uses its first k (nested
    prefixes). Each entry is a draw of the IWAE-k estimator; the entries share samples, so the curve
    is smooth and rises towards log p(x) in expectation, though not necessarily at every step.
    The proposal is the encoder's q unless `q` = (mu, logvar), each (B, D), is given (e.g. q*).
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive sample counts, got {ks}")
    mu, logvar = q if q is not None else model.encode(x)
    with seeded(seed, mu.device):
        eps = torch.randn((max(ks), *mu.shape), device=mu.device, dtype=mu.dtype)
    w = log_weights(model, x, mu, logvar, eps).double()  # (K, B)
    return torch.stack([torch.logsumexp(w[:k], 0) - math.log(k) for k in ks]).cpu()


# ---- per-image refinement of q --------------------------------------------------------------------


def elbo_estimate(model, x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """ELBO = E_q[log p(x|z)] - KL(q ‖ p(z)): the expectation over z = mu + sigma eps (S, B, D), the KL
    in closed form: -> (B,)."""
    z = mu + torch.exp(0.5 * logvar) * eps
    return log_likelihood(model, x, z).mean(0) - gaussian_kl(mu, logvar).sum(-1)


@dataclass(frozen=True)
class RefinedPosterior:
    """q*(z|x) = N(mu, diag(exp(logvar))) per image and the ELBOs it is chosen by, each (B,)."""

    mu: Tensor  # (B, D)
    logvar: Tensor  # (B, D)
    elbo: Tensor  # ELBO(q*)
    elbo_encoder: Tensor  # ELBO(q) of the encoder, by the same estimator
    improved: Tensor  # bool: False where refinement did not help and q* is the encoder's q


def refine_posterior(
    model,
    x: Tensor,
    *,
    steps: int = REFINE_STEPS,
    lr: float = REFINE_LR,
    n_samples: int = REFINE_SAMPLES,
    n_eval: int = ELBO_SAMPLES,
    score: Callable[[Tensor, Tensor], Tensor] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> RefinedPosterior:
    """Each image's own q*: gradient ascent on its ELBO from the encoder's (mu, logvar).

    The parameters are mu = mu_0 + sigma_0 u and logvar = logvar_0 + 2 v, so the step size is in units
    of the encoder's sigma whatever its scale. Adam runs `steps` steps with a cosine-decaying rate on
    the ELBO estimated with `n_samples` fresh reparameterised samples; the images are optimised
    together, which for Adam's elementwise updates equals optimising each on its own.

    `score(mu, logvar) -> (B,)` is the final estimator (default: the ELBO with the same `n_eval`
    samples of eps for q and q*, common random numbers). Where q* does not score higher than the
    encoder's q, q* is the encoder's q, so refinement never lowers the ELBO. `progress` is told the
    fraction of steps done every PROGRESS_EVERY steps.
    """
    with torch.no_grad():
        mu0, logvar0 = model.encode(x)
    sigma0 = torch.exp(0.5 * logvar0)
    u = torch.zeros_like(mu0, requires_grad=True)
    v = torch.zeros_like(mu0, requires_grad=True)
    optimizer = torch.optim.Adam([u, v], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    with seeded(seed, mu0.device):
        for step in range(steps):
            if progress is not None and step % PROGRESS_EVERY == 0:
                progress(step / steps)
            eps = torch.randn((n_samples, *mu0.shape), device=mu0.device, dtype=mu0.dtype)
            loss = -elbo_estimate(model, x, mu0 + sigma0 * u, logvar0 + 2 * v, eps).sum()
            # grad wrt (u, v) only: the model's own .grad stays untouched
            u.grad, v.grad = torch.autograd.grad(loss, [u, v])
            optimizer.step()
            schedule.step()
        eval_eps = torch.randn((n_eval, *mu0.shape), device=mu0.device, dtype=mu0.dtype)
    if score is None:
        score = lambda mu, logvar: elbo_estimate(model, x, mu, logvar, eval_eps)  # noqa: E731
    with torch.no_grad():
        mu, logvar = mu0 + sigma0 * u, logvar0 + 2 * v
        elbo_encoder, elbo = score(mu0, logvar0), score(mu, logvar)
    improved = elbo > elbo_encoder  # False for NaN: a q* that cannot be scored is not taken
    keep = improved[:, None]
    return RefinedPosterior(
        mu=torch.where(keep, mu, mu0),
        logvar=torch.where(keep, logvar, logvar0),
        elbo=torch.where(improved, elbo, elbo_encoder),
        elbo_encoder=elbo_encoder,
        improved=improved,
    )


# ---- the two gaps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gaps:
    """Per-image ELBO, refined ELBO and log p(x), each (N,) on the CPU, and how log p(x) was found."""

    elbo: Tensor
    elbo_refined: Tensor
    log_px: Tensor
    log_px_method: str  # "quadrature" (2-D latent) or "iwae-k<K>"
    identity_residual: Tensor | None  # (N,) log p(x) - (ELBO + KL(q ‖ p(z|x))), 2-D only

    @property
    def approximation_gap(self) -> Tensor:
        return self.log_px - self.elbo_refined

    @property
    def amortization_gap(self) -> Tensor:
        return self.elbo_refined - self.elbo

    def summary(self) -> dict:
        """Means over the images; `identity_residual` is the largest |residual| (a check: the worst)."""
        out = {
            "elbo": self.elbo.mean().item(),
            "elbo_refined": self.elbo_refined.mean().item(),
            "log_px": self.log_px.mean().item(),
            "log_px_method": self.log_px_method,
            "approximation_gap": self.approximation_gap.mean().item(),
            "amortization_gap": self.amortization_gap.mean().item(),
        }
        if self.identity_residual is not None:
            out["identity_residual"] = self.identity_residual.abs().max().item()
        return out


def gaps(
    model, x: Tensor, *, k: int = GAPS_K, n: int = 200, batch_size: int = 100, progress: bool = False
) -> Gaps:
    """ELBO, refined ELBO* and log p(x) for every image in x (N, C, H, W), hence both gaps.

    2-D latent: log p(x), the ELBO and ELBO* are quadratures on each image's n×n posterior grid.
    Otherwise: log p(x) is the IWAE bound with k samples, ELBO and ELBO* Monte-Carlo estimates with
    common random numbers.
    """
    parts = []
    for start in tqdm(range(0, len(x), batch_size), desc="gaps", unit="batch", disable=not progress):
        batch = x[start : start + batch_size]
        two_d = model.config.latent_dim == 2
        parts.append(_gaps_2d(model, batch, n) if two_d else _gaps_iwae(model, batch, k))
    fields = [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
    if model.config.latent_dim == 2:
        return Gaps(*fields[:3], log_px_method="quadrature", identity_residual=fields[3])
    return Gaps(*fields, log_px_method=f"iwae-k{k}", identity_residual=None)


def _gaps_2d(model, x: Tensor, n: int) -> tuple[Tensor, ...]:
    grids = [posterior_grid(model, x[i : i + 1], n=n) for i in range(len(x))]

    def on_grids(mu: Tensor, logvar: Tensor) -> Tensor:
        elbos = [g.elbo_of(m.cpu(), lv.cpu()) for g, m, lv in zip(grids, mu, logvar, strict=True)]
        return torch.tensor(elbos, dtype=torch.float64)

    refined = refine_posterior(model, x, score=on_grids)
    column = lambda name: torch.tensor([getattr(g, name) for g in grids], dtype=torch.float64)  # noqa: E731
    return column("elbo"), refined.elbo.double(), column("log_px"), column("residual")


def _gaps_iwae(model, x: Tensor, k: int) -> tuple[Tensor, ...]:
    refined = refine_posterior(model, x)
    log_px = iwae_curve(model, x, (k,))[0]
    return refined.elbo_encoder.double().cpu(), refined.elbo.double().cpu(), log_px


# ---- one image: everything the Posterior page shows ----------------------------------------------


@dataclass(frozen=True)
class ImageGaps:
    """One image's q(z|x), its refined q*, their ELBOs, log p(x) and how it was found, the IWAE curve,
    and for a 2-D latent the exact posterior grid. Nats per image; tensors on the CPU."""

    mu: Tensor  # (D,) the encoder's q
    logvar: Tensor  # (D,)
    mu_refined: Tensor  # (D,) q*
    logvar_refined: Tensor  # (D,)
    elbo: float  # ELBO(q)
    elbo_refined: float  # ELBO(q*)
    log_px: float
    log_px_method: str  # "quadrature" (2-D latent) or "iwae-k<K>"
    ks: tuple[int, ...]
    iwae: Tensor  # (len(ks),) the IWAE bound for each k, proposal q
    grid: PosteriorGrid | None  # 2-D latent only

    @property
    def approximation_gap(self) -> float:
        return self.log_px - self.elbo_refined

    @property
    def amortization_gap(self) -> float:
        return self.elbo_refined - self.elbo


def _on_grid(grid: PosteriorGrid) -> Callable[[Tensor, Tensor], Tensor]:
    """The score of one image's q = (mu, logvar), each (1, 2): its ELBO by quadrature on the grid, (1,)."""

    def score(mu: Tensor, logvar: Tensor) -> Tensor:
        return torch.tensor([grid.elbo_of(mu[0].cpu(), logvar[0].cpu())], dtype=torch.float64)

    return score


def explain(
    model,
    x: Tensor,
    *,
    n: int = 200,
    steps: int = REFINE_STEPS,
    ks: tuple[int, ...] = IWAE_KS,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> ImageGaps:
    """Everything about one image x (1, C, H, W) that the Posterior page shows.

    2-D latent: the n×n posterior grid gives log p(x) by quadrature, and the ELBOs of q and of q*
    (refined for `steps` steps) are quadratures on it. Otherwise log p(x) is the IWAE bound with
    max(ks) samples and the ELBOs Monte-Carlo estimates with common random numbers. `progress` is
    told the fraction done and the stage's name."""
    report = progress or (lambda fraction, stage: None)
    grid, score, start = None, None, 0.0
    if model.config.latent_dim == 2:
        report(0.0, "the exact posterior on the grid")
        grid = posterior_grid(
            model, x, n=n, progress=lambda f: report(0.5 * f, "the exact posterior on the grid")
        )
        score = _on_grid(grid)
        start = 0.5
    refine = lambda f: report(start + (0.9 - start) * f, "refining q for this image")  # noqa: E731
    refined = refine_posterior(model, x, steps=steps, score=score, seed=seed, progress=refine)
    report(0.9, "the IWAE curve")
    iwae = iwae_curve(model, x, ks, seed=seed)[:, 0]
    log_px, method = (
        (grid.log_px, "quadrature") if grid else (iwae[ks.index(max(ks))].item(), f"iwae-k{max(ks)}")
    )
    report(1.0, "done")
    return ImageGaps(
        *(t[0].detach().cpu() for t in model.encode(x)),
        refined.mu[0].detach().cpu(),
        refined.logvar[0].detach().cpu(),
        refined.elbo_encoder.item(),
        refined.elbo.item(),
        log_px,
        method,
        tuple(ks),
        iwae,
        grid,
    )


def format_gaps(name: str, dataset: str, n_images: int, summary: dict) -> str:
    """The text report of `evaluate --gaps`: the means of `Gaps.summary()`."""
    lines = [
        f"{name} on {dataset} test set ({n_images} images), nats/image",
        f"  log p(x)             {summary['log_px']:9.2f}  ({summary['log_px_method']})",
        f"  ELBO* (refined q)    {summary['elbo_refined']:9.2f}",
        f"  ELBO  (encoder's q)  {summary['elbo']:9.2f}",
        f"  approximation gap    {summary['approximation_gap']:9.3f}  log p(x) - ELBO*",
        f"  amortisation gap     {summary['amortization_gap']:9.3f}  ELBO* - ELBO",
    ]
    if "identity_residual" in summary:
        lines.append(
            f"  identity residual    {summary['identity_residual']:9.1e}  "
            "max |log p(x) - (ELBO + KL(q‖p(z|x)))|"
        )
    return "\n".join(lines)
