"""Colour models in the explorer's maths: decoded images are the likelihood's mean, channels last."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_core import VAE, VAEConfig
from vae_core import explore as ex


@pytest.fixture
def colour_model() -> VAE:
    torch.manual_seed(0)
    config = VAEConfig(
        arch="conv", latent_dim=2, hidden=(4, 8), likelihood="logistic", image_shape=(3, 24, 24)
    )
    return VAE(config).eval()


def test_decode_images_shows_the_logistic_mean_channels_last(colour_model: VAE) -> None:
    """A colour model's decoded images are (N, H, W, 3): the likelihood's mean (clamped locations)."""
    z = np.array([[0.0, 0.0], [1.0, -2.0]], np.float32)
    images = ex.decode_images(colour_model, z)
    with torch.no_grad():
        expected = colour_model.likelihood.mean(colour_model.decode(torch.from_numpy(z)))
    assert images.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(images, expected.permute(0, 2, 3, 1).numpy())
    assert images.min() >= 0 and images.max() <= 1


def test_reconstruct_gives_colour_images_and_error_maps(colour_model: VAE) -> None:
    """reconstruct returns colour reconstructions and |x - x_hat| maps of the same (N, H, W, 3) shape."""
    x = torch.randint(0, 256, (3, 3, 24, 24)) / 255
    recon, error = ex.reconstruct(colour_model, x)
    assert recon.shape == error.shape == (3, 24, 24, 3)
    np.testing.assert_allclose(error, np.abs(x.permute(0, 2, 3, 1).numpy() - recon), atol=1e-6)


def test_colour_grids_become_rgb_png_and_gif(colour_model: VAE) -> None:
    """A tiled colour grid is (rows*H + pad, cols*W + pad, 3) and encodes as an RGB PNG (and a GIF)
    with its pixels."""
    images = ex.decode_images(colour_model, np.linspace(-2, 2, 8, dtype=np.float32).reshape(4, 2))
    grid = ex.tile(images, nrow=2)
    assert grid.shape == (2 * 25 + 1, 2 * 25 + 1, 3)
    png = Image.open(io.BytesIO(ex.to_png(grid)))
    assert png.mode == "RGB" and png.size == (51, 51)
    np.testing.assert_array_equal(np.asarray(png), ex.to_pixels(grid))
    gif = Image.open(io.BytesIO(ex.to_gif(images, scale=1)))
    assert gif.size == (24, 24) and gif.n_frames == 4


def test_the_model_card_and_report_show_bits_per_dim(colour_model: VAE) -> None:
    """A logistic model's card and evaluate's report show its bits/dim and where it comes from;
    a Bernoulli model's metrics carry none."""
    from explorer.meta import card
    from vae_core.cli import format_report
    from vae_core.evaluation import summarize

    x = torch.randint(0, 256, (6, 3, 24, 24)) / 255
    metrics = summarize(colour_model, x, k=2, check=False)
    colour_model.meta.metrics = metrics
    assert card(colour_model)["test bits / dim"] == f"{metrics['bits_per_dim']:.3f} (IWAE NLL)"
    assert f"bits/dim    {metrics['bits_per_dim']:9.3f}  (from the NLL)" in format_report(
        "m", "folder", metrics
    )
    grey = VAE(VAEConfig(hidden=(8,)))
    assert "bits_per_dim" not in summarize(grey, torch.rand(4, 1, 28, 28).round(), check=False)
    # an NLL on the first images only says so on the card and in the report
    part = summarize(colour_model, x, k=2, nll_n=4, check=False)
    colour_model.meta.metrics = part
    assert card(colour_model)["test NLL (nats / image)"].endswith("(IWAE, k = 2, first 4 images)")
    assert "NLL (k=2, first 4 images)" in format_report("m", "folder", part) and part["n_images"] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "folder", "image_size": 8}, "image_size must be 0 .* or between 16 and 128, got 8"),
        ({"name": "folder", "channels": 2}, r"channels must be 0 \(the data's own\), 1 \(grey\) or 3"),
        ({"name": "mnist", "image_size": 32}, "apply to --dataset folder only"),
        ({"name": "folder", "test_fraction": 0.9}, "test_fraction must be between 0.01 and 0.5"),
    ],
)
def test_folder_options_are_checked(kwargs: dict, message: str) -> None:
    """A folder's image size, channels and test fraction are checked, and refused for named sets."""
    from vae_core.spec import DataSpec

    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)


def test_folder_options_default_to_64_px_colour() -> None:
    """A folder spec left at 0 imports 64 x 64 colour images with a 10% test split."""
    from vae_core.spec import DataSpec

    options = DataSpec(name="folder").folder_options()
    assert options == {"image_size": 64, "channels": 3, "test_fraction": 0.1, "seed": 0}


def test_an_8_bit_likelihood_implies_no_binarisation() -> None:
    """Asking for the logistic likelihood alone gives binarize "none"; asking for dynamic too is refused."""
    from vae_core.spec import RunSpec

    assert RunSpec.from_values({"model": {"likelihood": "logistic"}}).data.binarize == "none"
    with pytest.raises(ValueError, match="pass --binarize none"):
        RunSpec.from_values({"model": {"likelihood": "logistic"}, "data": {"binarize": "dynamic"}})
