"""The latent grid's size for large images, and the app's channels-last conv models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import loaders, widgets
from vae_core import VAE, DataSpec, RunSpec, VAEConfig, load_checkpoint, save_checkpoint
from vae_core import explore as ex
from vae_core import projection as pj

ROOT = Path(__file__).resolve().parent.parent
COLOUR = VAEConfig(arch="conv", latent_dim=3, hidden=(4, 8), likelihood="logistic", image_shape=(3, 64, 64))


@pytest.fixture
def colour_checkpoint(tmp_path: Path) -> Path:
    """A tiny 64x64 colour conv model saved as a checkpoint folder."""
    torch.manual_seed(0)
    data = DataSpec(name="folder", binarize="none", image_size=64, channels=3)
    folder = tmp_path / "runs" / "colour"
    folder.mkdir(parents=True)
    spec = RunSpec(data=data, model=COLOUR)
    save_checkpoint(folder, VAE(COLOUR).eval(), spec=spec, metrics={}, epoch=1, step=1)
    return folder


@pytest.mark.parametrize(
    ("image_shape", "side"),
    [((1, 28, 28), 30), ((3, 64, 64), 7), ((3, 32, 32), 15), ((1, 64, 64), 13), ((4, 1024, 1024), 3)],
)
def test_max_grid_side_keeps_the_pixel_values_of_the_largest_digit_grid(image_shape, side) -> None:
    """The largest side whose grid decodes no more pixel values than 30x30 digits (at least 3, at most 30)."""
    assert widgets.max_grid_side(image_shape) == side
    values = math.prod(image_shape)
    assert side in (3, 30) or side**2 * values <= widgets.GRID_VALUES < (side + 1) ** 2 * values


@pytest.mark.parametrize(
    ("image_shape", "side"), [((1, 28, 28), 15), ((3, 32, 32), 7), ((3, 64, 64), 5), ((1, 64, 64), 6)]
)
def test_a_grid_starts_at_the_pixel_values_of_the_default_digit_grid(image_shape, side) -> None:
    """The default side decodes about as many pixel values as 15x15 digits (at least 5, at most the cap)."""
    assert widgets.default_grid_side(image_shape) == side


def test_grid_page_offers_a_colour_model_seven_cells_a_side(colour_checkpoint: Path, monkeypatch) -> None:
    """On a 64x64 colour model the grid slider spans 2 to 7, from 5; a linked n=30 is ignored, said."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())
    monkeypatch.setenv("VAE_RUNS_DIR", str(colour_checkpoint.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"ckpt": str(colour_checkpoint.resolve()), "n": "30"})
    at.run()
    at.switch_page("pages/1_Latent_grid.py").run()
    assert not at.exception, [e.value for e in at.exception]
    slider = at.slider(key="n")
    assert (slider.min, slider.max, slider.value) == (2, 7, 5)
    assert "Ignored the link's n = 30" in " ".join(t.value for t in at.toast)


def test_app_loads_conv_models_channels_last_with_the_same_decodes(colour_checkpoint: Path) -> None:
    """The app's cached conv model holds channels-last weights and decodes as the checkpoint's model does."""
    cached = loaders.load_model(str(colour_checkpoint), loaders.folder_mtime(colour_checkpoint))
    weight = cached.decoder[-1].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    z = np.random.default_rng(0).normal(size=(5, COLOUR.latent_dim)).astype(np.float32)
    expected = ex.decode_images(load_checkpoint(colour_checkpoint), z)
    np.testing.assert_allclose(ex.decode_images(cached, z), expected, atol=1e-5)
