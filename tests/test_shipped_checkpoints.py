"""The shipped checkpoints: they load, carry a full card, and their card matches their weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vae_core import DatasetError, RunSpec, list_checkpoints, load_checkpoint, load_images
from vae_core.evaluation import eval_inputs, fingerprint
from vae_core.training import load_test

ROOT = Path(__file__).resolve().parents[1]
# name -> (dataset, test images): the IDX sets' 10,000, the emoji folder's seeded 10% split.
DATASETS = {
    "mnist-2d": ("mnist", 10_000),
    "mnist-best": ("mnist", 10_000),
    "mnist-conv": ("mnist", 10_000),
    "fashion-2d": ("fashion-mnist", 10_000),
    "fashion-best": ("fashion-mnist", 10_000),
    "emoji-conv": ("folder", 377),
}
SHIPPED = list(DATASETS)
EMOJI = "python checkpoints/build_emoji_folder.py data/emoji"  # builds the folder emoji-conv names
CARD = {"elbo", "recon", "kl", "kl_per_dim", "active_units", "n_images", "nll", "nll_k", "check", "device"}


def test_every_shipped_model_is_present() -> None:
    """The models of the model card ship in checkpoints/."""
    assert [p.name for p in list_checkpoints(ROOT / "checkpoints")] == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_complete_and_consistent(name: str) -> None:
    """Each checkpoint loads and its metrics hold the full card, with ELBO = -(recon + KL) and an NLL
    over the whole test set."""
    model = load_checkpoint(ROOT / "checkpoints" / name)
    m = model.meta.metrics
    assert m.keys() >= CARD, f"{name} lacks {CARD - m.keys()}"
    assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]), abs=1e-3)
    assert sum(m["kl_per_dim"]) == pytest.approx(m["kl"], rel=1e-3)
    assert len(m["kl_per_dim"]) == model.config.latent_dim
    dataset, n_test = DATASETS[name]
    assert m["n_images"] == n_test and m["nll"] <= -m["elbo"]  # the IWAE bound is tighter
    assert m.get("nll_n", n_test) == n_test, f"{name}'s NLL covers only its first {m['nll_n']} test images"
    assert model.meta.dataset == dataset
    if model.likelihood.bits_per_dim_applies:  # 8-bit pixels: the card gives bits/dim of its NLL
        assert m["bits_per_dim"] == pytest.approx(
            m["nll"] / (math.prod(model.config.image_shape) * math.log(2))
        )
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
    data = model.meta.spec.data
    try:
        test = load_images(data.name, "test", download=False) if data.name != "folder" else load_test(data)
    except DatasetError as e:
        pytest.skip(f"{model.meta.dataset} test set not available ({EMOJI} builds the emoji folder): {e}")
    stored = model.meta.metrics["check"]
    torch.manual_seed(0)
    x = eval_inputs(test, data.binarize)
    fresh = fingerprint(model, x, stored["n"], stored["k"])
    # 0.05 nats, or 1e-5 of an 8-bit model's thousands of nats (float32 sums over 3,072 pixels)
    assert fresh["elbo"] == pytest.approx(stored["elbo"], abs=0.05, rel=1e-5)
    assert fresh["nll"] == pytest.approx(stored["nll"], abs=0.05, rel=1e-5)
