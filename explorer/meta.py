"""What the UI reads of a checkpoint's stored configuration, in one place: its dataset, how its
inputs are binarised, its likelihood in words, and the model card, all from its typed run spec
(`model.meta.spec`)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd

from vae_core import VAE
from vae_core.data import FOLDER
from vae_core.evaluation import nll_subset
from vae_core.likelihood import Description, describe
from vae_core.onnx_model import OnnxVAE
from vae_core.spec import DataSpec


def dataset(model: VAE) -> str:
    """The dataset the model was trained on ("mnist", "fashion", ...)."""
    return model.meta.spec.data.name


def dataset_label(model: VAE) -> str:
    """The dataset as a reader knows it: a named set's name, or a folder's path ("data/emoji (folder)")."""
    data = model.meta.spec.data
    return f"{data.folder} ({FOLDER})" if data.name == FOLDER and data.folder else data.name


def data_key(model: VAE) -> str:
    """The model's data as a plain cache key: a named set's name, or a folder's data spec as JSON
    (its path and transform), from which `data_spec` gives the spec back."""
    return key_of(model.meta.spec.data)


def key_of(data: DataSpec) -> str:
    """`data_key` of a data spec."""
    return json.dumps(asdict(data), sort_keys=True) if data.name == FOLDER else data.name


def data_spec(key: str) -> DataSpec:
    """The inverse of `data_key`."""
    return DataSpec(**json.loads(key)) if key.startswith("{") else DataSpec(name=key)


def binarization(model: VAE) -> str:
    """How the model's inputs were binarised in training ("none", "dynamic", ...); evaluation follows it."""
    return model.meta.spec.data.binarize


def likelihood(model: VAE | OnnxVAE) -> Description:
    """The model's pixel likelihood in words: what p(x|z) is and what a decoded image shows."""
    return describe(model.likelihood.name)


def input_caption(model: VAE) -> str:
    """What the model's input x is, as a picture's caption: binarised for a "dynamic" model."""
    if binarization(model) == "dynamic":
        return "model input x (binarised as in evaluation)"
    return "model input x"


def card(model: VAE | OnnxVAE) -> dict[str, str]:
    """The model card: what was trained on what, and how well it does on the test set."""
    rows = onnx_rows(model) if isinstance(model, OnnxVAE) else trained_rows(model)
    return rows | metric_rows(model.meta.metrics, model.config.latent_dim)


def onnx_rows(model: OnnxVAE) -> dict[str, str]:
    """What an ONNX model's manifest says: its name, description, data, sizes and likelihood."""
    manifest = model.manifest
    return {
        "name": manifest.name or "—",
        "description": manifest.description or "—",
        "format": "ONNX (vae-onnx, version 1)",
        "dataset": dataset(model),
        "latent dim": str(manifest.latent_dim),
        "likelihood": manifest.likelihood,
    }


def trained_rows(model: VAE) -> dict[str, str]:
    """What our checkpoint's run spec says: data, architecture, sizes and training."""
    spec, config = model.meta.spec, model.config
    rows = {
        "dataset": dataset_label(model),
        "architecture": f"{config.arch} ({config.activation})",
        "hidden": " × ".join(map(str, config.hidden)),
        "latent dim": str(config.latent_dim),
        "epochs": f"{model.meta.epoch} of {spec.train.epochs}",
        "β · binarize": f"{spec.train.beta:g} · {spec.data.binarize}",
        "likelihood · image": f"{config.likelihood} · {' × '.join(map(str, config.image_shape))}",
    }
    if spec.train.precision != "fp32":
        rows["training precision"] = f"{spec.train.precision} (mixed)"
    return rows


def metric_rows(metrics: dict, latent_dim: int) -> dict[str, str]:
    """How well the model does on the test set, as far as its stored metrics say."""
    rows = {}
    if "elbo" in metrics:
        rows["test ELBO (nats / image)"] = (
            f"{signed(metrics['elbo'])} = −({metrics['recon']:.2f} recon + {metrics['kl']:.2f} KL)"
        )
    if "nll" in metrics:
        on = nll_subset(metrics)
        rows["test NLL (nats / image)"] = f"{metrics['nll']:.2f} (IWAE, k = {metrics.get('nll_k', '?')}{on})"
    if "bits_per_dim" in metrics:
        bound = "IWAE NLL" if metrics.get("bits_per_dim_from") == "nll" else "−ELBO, a bound"
        rows["test bits / dim"] = f"{metrics['bits_per_dim']:.3f} ({bound})"
    if "active_units" in metrics:
        rows["active units"] = f"{metrics['active_units']} of {latent_dim}"
    return rows


def signed(value: float) -> str:
    """A number to two decimals with a true minus sign (−), as in the formula beside it."""
    return f"{value:.2f}".replace("-", "−")


def cards_frame(models: dict[str, VAE]) -> pd.DataFrame:
    """Model cards as one table, one column per model; a row a model lacks shows a dash."""
    return pd.DataFrame({name: card(m) for name, m in models.items()}).fillna("—")
