"""Checkpoints: one folder per model, written atomically, loaded without executing code.

    checkpoints/NAME/model.pt        weights, model and training config, dataset, metrics, version
    checkpoints/NAME/train_state.pt  optimizer, RNG and position, for --resume (not shipped)
    checkpoints/NAME/metrics.jsonl   the training log

Both `.pt` files are plain dicts of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`, which refuses any pickled object that could run code.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from vae_core.model import VAE, CheckpointMeta, VAEConfig

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, foreign, unsafe or of an unknown format version."""


def model_file(path: str | Path) -> Path:
    """The model file of a checkpoint given as its folder or as the file itself."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() or not path.suffix else path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load with weights_only=True, every failure turned into a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"Refused to load {path}: it holds objects other than tensors and plain data, which could "
            f"run code when unpickled. Only load checkpoints written by vae_core."
        ) from e
    except Exception as e:  # truncated zip, not a torch file at all, bad storage
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or foreign): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a vae_core checkpoint (it holds a {type(obj).__name__})")
    return obj


def save_checkpoint(
    path: str | Path,
    model: VAE,
    *,
    dataset: str,
    train_config: dict,
    metrics: dict,
    epoch: int,
    step: int,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the model file of a checkpoint folder atomically; returns its path."""
    file = model_file(path)
    atomic_save(
        {
            "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "dataset": dataset,
            "train_config": dict(train_config),
            "metrics": dict(metrics),
            "epoch": epoch,
            "step": step,
            "state_dict": {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()},
        },
        file,
    )
    return file


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict, validated: format version, required keys."""
    file = model_file(path)
    ckpt = safe_load(file)
    version = ckpt.get("format_version")
    if version is None:
        raise CheckpointError(f"{file} is not a vae_core checkpoint (no format_version)")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format version {version}; this vae_core reads version {FORMAT_VERSION}. "
            f"Use a matching vae_core or retrain the model."
        )
    missing = {"model_config", "dataset", "train_config", "metrics", "state_dict"} - ckpt.keys()
    if missing:
        raise CheckpointError(f"{file} is missing {', '.join(sorted(missing))}")
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a model from its checkpoint, in eval mode, on `device`; its card is `model.meta`."""
    ckpt = read_checkpoint(path)
    try:
        model = VAE(VAEConfig(**ckpt["model_config"]))
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{model_file(path)} does not match its own model config: {e}") from e
    model.meta = CheckpointMeta(
        dataset=ckpt["dataset"],
        train_config=ckpt["train_config"],
        metrics=ckpt["metrics"],
        epoch=ckpt.get("epoch", 0),
        step=ckpt.get("step", 0),
        path=str(model_file(path).parent),
    )
    return model.to(device).eval()


def update_metrics(path: str | Path, metrics: dict) -> None:
    """Merge `metrics` into a checkpoint's stored metrics (e.g. after `evaluate --write`)."""
    ckpt = read_checkpoint(path)
    ckpt["metrics"] = {**ckpt["metrics"], **metrics}
    atomic_save(ckpt, model_file(path))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it, so another process can tail the file."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def list_checkpoints(*roots: str | Path) -> list[Path]:
    """Checkpoint folders (those holding a model file) directly under the given roots, sorted."""
    found = {p.parent for root in roots if Path(root).is_dir() for p in Path(root).glob(f"*/{MODEL_FILE}")}
    return sorted(found)
