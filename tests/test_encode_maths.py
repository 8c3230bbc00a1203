"""vae_core.explore's maths for one encoded image: posterior samples, neighbours, ELBO rank, σ ellipse."""

import numpy as np
import pytest

from vae_core import explore as ex


def test_posterior_samples_have_the_posterior_moments():
    """Many samples of q(z|x) have mean mu and standard deviation exp(logvar / 2) per dimension."""
    mu, logvar = np.array([1.5, -2.0, 0.0]), np.log(np.array([0.25, 1.0, 4.0]))
    z = ex.sample_posterior(mu, logvar, 20_000, seed=3)
    assert z.shape == (20_000, 3) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), mu, atol=0.05)
    np.testing.assert_allclose(z.std(0), [0.5, 1.0, 2.0], rtol=0.03)


def test_posterior_samples_are_seeded():
    """The same seed gives the same samples, another seed others."""
    mu, logvar = [0.0, 1.0], [0.0, -1.0]
    a, b = ex.sample_posterior(mu, logvar, 5, seed=1), ex.sample_posterior(mu, logvar, 5, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, ex.sample_posterior(mu, logvar, 5, seed=2))


def test_posterior_samples_collapse_onto_mu_for_tiny_variance():
    """With a vanishing variance every sample is the posterior mean."""
    z = ex.sample_posterior([0.3, -0.7], [-60.0, -60.0], 4)
    np.testing.assert_allclose(z, [[0.3, -0.7]] * 4, atol=1e-6)


def test_posterior_samples_reject_mismatched_shapes():
    """mu and logvar of different shapes are an error that names both shapes."""
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        ex.sample_posterior([0.0, 0.0], [0.0, 0.0, 0.0], 2)


def test_nearest_finds_the_closest_points_in_order():
    """Nearest neighbours come back closest first, with their Euclidean distances."""
    points = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, -2.0], [10.0, 10.0]])
    indices, distances = ex.nearest(points, [0.0, 0.0], 3)
    np.testing.assert_array_equal(indices, [0, 2, 3])
    np.testing.assert_allclose(distances, [0.0, 1.0, 2.0])


def test_nearest_matches_brute_force_in_many_dimensions():
    """In 32 dimensions the k nearest are the k smallest of all pairwise distances."""
    rng = np.random.default_rng(0)
    points, query = rng.normal(size=(500, 32)), rng.normal(size=32)
    indices, distances = ex.nearest(points, query, 8)
    brute = sorted(range(500), key=lambda i: float(np.sum((points[i] - query) ** 2)))[:8]
    np.testing.assert_array_equal(indices, brute)
    np.testing.assert_allclose(distances, np.linalg.norm(points[brute] - query, axis=1))


def test_nearest_ties_keep_the_order_of_the_points_and_k_is_capped():
    """Equal distances keep the points' order, and asking for more than N returns all N."""
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    indices, _ = ex.nearest(points, [0.0, 0.0], 10)
    np.testing.assert_array_equal(indices, [0, 1, 2])


@pytest.mark.parametrize(
    ("value", "expected"), [(-100.0, 0.0), (0.5, 12.5), (2.0, 37.5 + 6.25), (100.0, 100.0)]
)
def test_percentile_of_counts_below_and_half_the_ties(value, expected):
    """The rank is the share of values below, with values equal to it counted half."""
    values = [0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
    assert ex.percentile_of(values, value) == pytest.approx(expected)


def test_percentile_of_the_median_is_fifty():
    """The median of a symmetric sample sits at the 50th percentile."""
    assert ex.percentile_of(np.arange(-50, 51), 0) == pytest.approx(50.0)


def test_percentile_of_nothing_is_an_error():
    """Ranking among no values is a ValueError, not a division by zero."""
    with pytest.raises(ValueError, match="at least one"):
        ex.percentile_of([], 1.0)


def test_sigma_ellipse_of_a_2d_posterior_has_sigma_radii():
    """For a 2-D diagonal posterior the 1-σ curve reaches mu ± σ along each axis and is closed."""
    mu, sigma = np.array([1.0, -2.0]), np.array([0.5, 2.0])
    curve = ex.sigma_ellipse(mu, 2 * np.log(sigma), n_points=400)
    assert curve.shape == (401, 2)
    np.testing.assert_allclose(curve[0], curve[-1], atol=1e-12)
    np.testing.assert_allclose(curve.max(0) - mu, sigma, rtol=1e-4)
    np.testing.assert_allclose(mu - curve.min(0), sigma, rtol=1e-4)
    # every point satisfies the ellipse's equation
    np.testing.assert_allclose((((curve - mu) / sigma) ** 2).sum(1), 1.0, atol=1e-9)


def test_sigma_ellipse_scales_with_n_std():
    """The 2-σ curve is the 1-σ curve stretched twice about the mean."""
    mu, logvar = [0.5, 0.5], [0.3, -0.4]
    one, two = ex.sigma_ellipse(mu, logvar), ex.sigma_ellipse(mu, logvar, n_std=2)
    np.testing.assert_allclose(two - mu, 2 * (one - np.asarray(mu)), atol=1e-12)


def test_sigma_ellipse_projects_the_posterior_covariance():
    """On a projection the curve is the contour of N(C (mu - mean), C Σ Cᵀ): checked on its quadratic form."""
    rng = np.random.default_rng(1)
    mu, logvar = rng.normal(size=5), rng.normal(size=5)
    mean, components = ex.pca_2d(rng.normal(size=(200, 5)) * [3, 2, 1, 0.5, 0.1])
    curve = ex.sigma_ellipse(mu, logvar, n_std=1.5, projection=(mean, components))
    centre = ex.project(mu, mean, components)[0]
    cov = components @ np.diag(np.exp(logvar)) @ components.T
    d = curve - centre
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d), 1.5**2, rtol=1e-8)


def test_sigma_ellipse_matches_samples_of_the_posterior():
    """About 39% of 2-D posterior samples fall inside the 1-σ ellipse (1 - e^(-1/2))."""
    mu, logvar = np.array([0.2, -0.1]), np.log(np.array([0.09, 0.36]))
    z = ex.sample_posterior(mu, logvar, 40_000, seed=0)
    inside = ((((z - mu) / np.exp(logvar / 2)) ** 2).sum(1) <= 1).mean()
    assert inside == pytest.approx(1 - np.exp(-0.5), abs=0.01)


def test_sigma_ellipse_needs_a_projection_beyond_two_dimensions():
    """A 3-D posterior without a projection is an error that says so."""
    with pytest.raises(ValueError, match="projection"):
        ex.sigma_ellipse([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])


def test_uint8_images_become_display_images():
    """Stored uint8 (N, 1, H, W) images become floats (N, H, W) in [0, 1] with grey levels kept."""
    images = np.array([[[[0, 51], [255, 102]]]], dtype=np.uint8)
    np.testing.assert_allclose(ex.uint8_images(images), [[[0.0, 0.2], [1.0, 0.4]]], atol=1e-7)
