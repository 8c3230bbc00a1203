"""The per-image scores every page shares (vae_core.projection.score_images / cached_scores)."""

import numpy as np
import pytest
import torch

from tests.conftest import synthetic_images
from vae_core import VAE, VAEConfig, eval_inputs, score
from vae_core import projection as pj


@pytest.fixture
def model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, hidden=(16,))).eval()


def test_score_images_is_one_seeded_score_of_the_evaluation_inputs(model):
    """score_images equals vae_core.score of eval_inputs field by field, and takes a read-only array."""
    images = synthetic_images(40).images.numpy()
    images.setflags(write=False)
    arrays = pj.score_images(model, images, "dynamic")
    expected = score(model, eval_inputs(torch.from_numpy(images.copy()), "dynamic"))
    assert set(arrays) == set(pj.SCORE_FIELDS)
    for name in ("mu", "logvar", "recon", "kl", "elbo"):
        np.testing.assert_array_equal(arrays[name], getattr(expected, name).numpy())
    np.testing.assert_allclose(arrays["elbo"], -(arrays["recon"] + arrays["kl"]), rtol=1e-6)


def test_cached_scores_replace_a_file_without_every_field(tmp_path, monkeypatch, model):
    """A disk-cache entry written before logvar was stored is recomputed, then read back from disk."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path))
    images = synthetic_images(20).images.numpy()
    key = "model@1|test|scores"
    pj.cached(key, lambda: {"mu": np.zeros((20, 3), np.float32)})  # an older file: mu only
    fresh = pj.cached_scores(key, lambda: pj.score_images(model, images, "none"))
    assert set(fresh) == set(pj.SCORE_FIELDS)
    again = pj.cached_scores(key, lambda: pytest.fail("recomputed although on disk"))
    np.testing.assert_array_equal(again["logvar"], fresh["logvar"])
