"""The shipped checkpoints: they load, carry a full card, and their card matches their weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_core import DatasetError, RunSpec, list_checkpoints, load_checkpoint, load_images
from vae_core.evaluation import eval_inputs, fingerprint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["mnist-2d", "mnist-best", "fashion-2d", "fashion-best"]
CARD = {"elbo", "recon", "kl", "kl_per_dim", "active_units", "n_images", "nll", "nll_k", "check", "device"}


def test_every_shipped_model_is_present() -> None:
    """The four models of the model card ship in checkpoints/."""
    assert [p.name for p in list_checkpoints(ROOT / "checkpoints")] == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_complete_and_consistent(name: str) -> None:
    """Each checkpoint loads and its metrics hold the full card, with ELBO = -(recon + KL)."""
    model = load_checkpoint(ROOT / "checkpoints" / name)
    m = model.meta.metrics
    assert m.keys() >= CARD, f"{name} lacks {CARD - m.keys()}"
    assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]), abs=1e-3)
    assert sum(m["kl_per_dim"]) == pytest.approx(m["kl"], rel=1e-3)
    assert len(m["kl_per_dim"]) == model.config.latent_dim
    assert m["n_images"] == 10_000 and m["nll"] <= -m["elbo"]  # the IWAE bound is tighter
    assert model.meta.dataset == ("mnist" if name.startswith("mnist") else "fashion-mnist")
    assert model.meta.spec.model == model.config and model.meta.spec.train.lr_schedule == "cosine"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_are_format_version_2(name: str) -> None:
    """The shipped model files store their run spec (format 2), not the version-1 dicts."""
    ckpt = torch.load(ROOT / "checkpoints" / name / "model.pt", weights_only=True)
    assert ckpt["format_version"] == 2 and "train_config" not in ckpt and "model_config" not in ckpt
    assert RunSpec.from_dict(ckpt["spec"]) == load_checkpoint(ROOT / "checkpoints" / name).meta.spec


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_a_fresh_evaluation(name: str) -> None:
    """Re-running the seeded ELBO and IWAE-10 on the first 500 test images reproduces the card."""
    model = load_checkpoint(ROOT / "checkpoints" / name)
    try:
        test = load_images(model.meta.dataset, "test", download=False)
    except DatasetError as e:
        pytest.skip(f"{model.meta.dataset} test set not available: {e}")
    stored = model.meta.metrics["check"]
    torch.manual_seed(0)
    x = eval_inputs(test, model.meta.spec.data.binarize)
    fresh = fingerprint(model, x, stored["n"], stored["k"])
    assert fresh["elbo"] == pytest.approx(stored["elbo"], abs=0.05)
    assert fresh["nll"] == pytest.approx(stored["nll"], abs=0.05)
