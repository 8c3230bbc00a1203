"""vae_core.explore: grids, interpolation, arithmetic and image export, checked against closed forms."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_core import VAE, VAEConfig
from vae_core import explore as ex


@pytest.fixture(scope="module")
def model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, hidden=(16,))).eval()


def test_slerp_hits_both_endpoints():
    """slerp starts at z0 and ends at z1 exactly."""
    z0, z1 = np.array([1.0, 2.0, -1.0]), np.array([-0.5, 0.3, 2.0])
    path = ex.interpolate(z0, z1, 7, method="slerp")
    assert path.shape == (7, 3)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)


def test_slerp_keeps_unit_vectors_on_the_sphere():
    """Between two unit vectors every slerp point has norm 1, and the midpoint bisects the angle."""
    z0, z1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    path = ex.interpolate(z0, z1, 9, method="slerp")
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(path[4], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_linear_interpolation_is_evenly_spaced():
    """A linear path moves the same distance each step."""
    path = ex.interpolate([0.0, 0.0], [3.0, -6.0], 4, method="linear")
    np.testing.assert_allclose(path, [[0, 0], [1, -2], [2, -4], [3, -6]], atol=1e-6)


def test_interpolate_rejects_bad_settings():
    """Too few steps or an unknown method is a ValueError naming the value."""
    with pytest.raises(ValueError, match="steps"):
        ex.interpolate([0.0], [1.0], 1)
    with pytest.raises(ValueError, match="cubic"):
        ex.interpolate([0.0], [1.0], 3, method="cubic")


def test_quantile_axis_matches_normal_icdf_and_is_symmetric():
    """Quantile spacing is Φ⁻¹ of evenly spaced probabilities, symmetric about 0."""
    axis = ex.grid_axis(9, spacing="quantile", extent=0.9)
    expected = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 9, dtype=torch.float64))
    np.testing.assert_allclose(axis, expected.numpy(), atol=1e-9)
    np.testing.assert_allclose(axis, -axis[::-1], atol=1e-12)


def test_range_axis_spans_plus_minus_extent():
    """Range spacing is n evenly spaced values in [-extent, extent]."""
    np.testing.assert_allclose(ex.grid_axis(5, spacing="range", extent=2.0), [-2, -1, 0, 1, 2])


def test_grid_axis_rejects_bad_extent():
    """A prior mass outside (0, 1) or an unknown spacing is refused."""
    with pytest.raises(ValueError, match="extent"):
        ex.grid_axis(5, spacing="quantile", extent=1.0)
    with pytest.raises(ValueError, match="spacing"):
        ex.grid_axis(5, spacing="log")


def test_batched_grid_equals_per_cell_decodes(model):
    """Each cell of the one-call grid equals decoding its own z, rows running high to low."""
    base = np.array([0.0, 0.0, 0.7], np.float32)
    images, axis = ex.latent_grid(model, 4, spacing="range", extent=2.0, dims=(0, 1), base=base)
    assert images.shape == (4, 4, 28, 28)
    for row in range(4):
        for col in range(4):
            z = ex.slice_point(base, (0, 1), (axis[col], axis[3 - row]))
            np.testing.assert_allclose(images[row, col], ex.decode_images(model, z)[0], atol=1e-6)


def test_grid_latents_keep_other_dimensions_at_the_base(model):
    """Only the two chosen dimensions vary across the slice."""
    z = ex.grid_latents(np.array([-1.0, 1.0]), latent_dim=3, dims=(2, 0), base=np.array([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(z[:, :, 1], 6.0)
    np.testing.assert_array_equal(z[0, :, 2], [-1.0, 1.0])
    np.testing.assert_array_equal(z[:, 0, 0], [1.0, -1.0])


def test_slice_point_rejects_equal_dimensions():
    """Spanning a slice needs two different dimensions."""
    with pytest.raises(ValueError, match="dims"):
        ex.slice_point([0.0, 0.0], (1, 1), (0.0, 0.0))


def test_decode_images_are_probabilities(model):
    """Decoded images are sigmoid(logits): shape (N, 28, 28), values in [0, 1]."""
    images = ex.decode_images(model, np.random.default_rng(0).normal(size=(5, 3)))
    assert images.shape == (5, 28, 28)
    assert images.min() >= 0 and images.max() <= 1


def test_decode_images_matches_the_decoder(model):
    """decode_images is exactly sigmoid of the decoder's logits."""
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(z))[:, 0].numpy()
    np.testing.assert_allclose(ex.decode_images(model, z.numpy()), expected, atol=1e-6)


def test_reconstruct_error_map_is_absolute_difference(model):
    """The error map is |x − x̂| where x̂ decodes the posterior mean."""
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    x_hat, error = ex.reconstruct(model, x)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(model.encode(x)[0]))[:, 0].numpy()
    np.testing.assert_allclose(x_hat, expected, atol=1e-6)
    np.testing.assert_allclose(error, np.abs(x[:, 0].numpy() - expected), atol=1e-6)


def test_sample_prior_is_seeded_and_scaled(model):
    """The same seed gives the same z; temperature scales it; temperature 0 is the origin."""
    a = ex.sample_prior(model, 6, seed=3)
    np.testing.assert_array_equal(a, ex.sample_prior(model, 6, seed=3))
    np.testing.assert_allclose(ex.sample_prior(model, 6, temperature=0.5, seed=3), 0.5 * a, atol=1e-6)
    assert not ex.sample_prior(model, 6, temperature=0.0, seed=3).any()


def test_encode_means_matches_encoder_in_batches(model):
    """Batched posterior means equal one encoder call on all images."""
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model.encode(x)[0].numpy()
    np.testing.assert_allclose(ex.encode_means(model, x, batch_size=3), expected, atol=1e-6)


def test_latent_arithmetic_is_a_minus_b_plus_c():
    """a − b + c, element by element."""
    np.testing.assert_allclose(ex.latent_arithmetic([1, 2], [3, 5], [0.5, 0.5]), [-1.5, -2.5])


def test_display_scale_round_trips():
    """from_display inverts to_display on the quantile scale, and both are the identity on a range."""
    z = np.array([-2.0, -0.3, 0.0, 1.7])
    np.testing.assert_allclose(ex.from_display(ex.to_display(z, "quantile"), "quantile"), z, atol=1e-6)
    np.testing.assert_allclose(ex.to_display(z, "quantile")[2], 0.5)
    np.testing.assert_array_equal(ex.to_display(z, "range"), z)


def test_pca_finds_the_direction_of_a_line():
    """Points on a line project onto PC 1 with their distances kept and nothing on PC 2."""
    t = np.linspace(-1, 1, 11)[:, None]
    direction = np.array([[3.0, 0.0, 4.0]]) / 5
    points = 2.0 + t * direction
    mean, components = ex.pca_2d(points)
    projected = ex.project(points, mean, components)
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(t[:, 0]), atol=1e-9)
    np.testing.assert_allclose(projected[:, 1], 0.0, atol=1e-9)


def _anisotropic(seed: int = 0) -> np.ndarray:
    """300 points in 6-D with distinct variances along rotated axes, so PC 1 and PC 2 are well defined."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return (rng.normal(size=(300, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]) @ rotation + 1.5


def _largest_loadings(components: np.ndarray) -> np.ndarray:
    return components[np.arange(len(components)), np.abs(components).argmax(1)]


def test_pca_gives_each_direction_its_largest_loading_positive():
    """pca_2d returns orthonormal directions whose entry of largest magnitude is positive."""
    _, components = ex.pca_2d(_anisotropic())
    np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-12)
    assert (_largest_loadings(components) > 0).all()


def test_pca_does_not_depend_on_the_signs_svd_picks(monkeypatch):
    """An SVD that returns its directions with the other signs gives the very same mean, directions
    and map: the sign rule, not LAPACK, decides which way the map faces."""
    points = _anisotropic()
    mean, components = ex.pca_2d(points)
    svd = np.linalg.svd

    def flipped(a, *args, **kwargs):
        u, s, vt = svd(a, *args, **kwargs)
        signs = np.where(np.arange(len(s)) % 2 == 0, -1.0, 1.0)  # flip directions 1, 3, 5, ...
        return u * signs, s, vt * signs[:, None]

    monkeypatch.setattr(np.linalg, "svd", flipped)
    flipped_mean, flipped_components = ex.pca_2d(points)
    np.testing.assert_array_equal(flipped_mean, mean)
    np.testing.assert_array_equal(flipped_components, components)


def test_pca_sign_rule_holds_when_the_points_are_mirrored_through_their_mean():
    """Mirroring the points through their mean (every principal axis flips its sign) keeps the same
    mean and directions, so the mirrored points' map is the original map turned by 180 degrees."""
    points = _anisotropic()
    mean, components = ex.pca_2d(points)
    mirrored = 2 * points.mean(0) - points
    mirrored_mean, mirrored_components = ex.pca_2d(mirrored)
    np.testing.assert_allclose(mirrored_mean, mean, atol=1e-12)
    np.testing.assert_allclose(mirrored_components, components, atol=1e-12)
    np.testing.assert_allclose(
        ex.project(mirrored, mirrored_mean, mirrored_components),
        -ex.project(points, mean, components),
        atol=1e-9,
    )


def test_kl_order_sorts_and_marks_inactive():
    """Dimensions come largest KL first; those below 1% of the largest are inactive."""
    order, inactive = ex.kl_order([0.5, 3.0, 0.001, 1.0])
    np.testing.assert_array_equal(order, [1, 3, 0, 2])
    np.testing.assert_array_equal(inactive, [False, False, True, False])


def test_tile_places_images_row_major():
    """Image i lands in row i // nrow, column i % nrow, with padding between cells."""
    images = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])
    grid = ex.tile(images, 2, pad=1, pad_value=1.0)
    assert grid.shape == (7, 7)
    assert (grid[1, 1], grid[1, 4], grid[4, 1]) == pytest.approx((0.1, 0.2, 0.3))
    assert grid[4, 4] == 1.0  # the empty fourth cell stays padding


def test_pixels_round_to_grey_levels_and_tile_white_in_uint8():
    """to_pixels rounds [0, 1] to 0..255 (clipping outside), and tiles of uint8 pixels pad with 255."""
    pixels = ex.to_pixels(np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]]))
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, [[0, 0, 128, 255, 255]])
    assert ex.to_pixels(pixels) is pixels
    images = np.random.default_rng(0).random((5, 3, 3))
    np.testing.assert_array_equal(ex.tile(ex.to_pixels(images), 3), ex.to_pixels(ex.tile(images, 3)))


def test_png_and_gif_round_trip():
    """to_png writes the pixels (enlarged with sharp edges); to_gif writes one frame per image."""
    image = np.zeros((2, 3))
    image[0, 1] = 1.0
    png = Image.open(io.BytesIO(ex.to_png(image, scale=2)))
    assert png.size == (6, 4)
    assert np.asarray(png)[0, 2] == 255 and np.asarray(png)[3, 0] == 0
    assert ex.to_png(ex.to_pixels(image), scale=2) == ex.to_png(image, scale=2)
    gif = Image.open(io.BytesIO(ex.to_gif(np.stack([image, 1 - image, image]), duration_ms=50)))
    assert gif.n_frames == 3


def test_colorize_maps_zero_to_black_and_one_to_white():
    """The error ramp runs from black through red and yellow to white."""
    np.testing.assert_allclose(ex.colorize(np.array([0.0, 1.0])), [[0, 0, 0], [1, 1, 1]])
