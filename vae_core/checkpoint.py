"""Checkpoints: one folder per model, written atomically, loaded without executing code.

    checkpoints/NAME/model.pt        weights, run spec (data, model, training), metrics, position, version
    checkpoints/NAME/train_state.pt  optimizer, RNG and position, for --resume (not shipped)
    checkpoints/NAME/metrics.jsonl   the training log (`vae_core.records`)

Both `.pt` files are plain dicts of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`, which refuses any pickled object that could run code. Format
version 2 stores the `RunSpec` as `spec`; version 1 files (separate model config, dataset and
training config) are read through `spec_from_v1`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from vae_core.atomic import atomic_write
from vae_core.model import VAE, CheckpointMeta
from vae_core.records import METRICS_FILE as METRICS_FILE  # re-exported: the folder's files
from vae_core.spec import DataSpec, RunSpec, TrainConfig, VAEConfig

FORMAT_VERSION = 2
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, foreign, unsafe or of an unknown format version."""


def model_file(path: str | Path) -> Path:
    """The model file of a checkpoint given as its folder or as the file itself."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() or not path.suffix else path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through the one atomic writer: readers never see half a file."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
    spec: RunSpec,
    metrics: dict,
    epoch: int,
    step: int,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the model file of a checkpoint folder atomically; returns its path."""
    if spec.model != model.config:
        raise ValueError(f"The spec's model {spec.model} is not the model's config {model.config}")
    file = model_file(path)
    atomic_save(
        {
            "format_version": FORMAT_VERSION,
            "spec": spec.to_dict(),
            "metrics": dict(metrics),
            "epoch": epoch,
            "step": step,
            "state_dict": {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()},
        },
        file,
    )
    return file


def spec_from_v1(model_config: dict, dataset: str, train_config: dict) -> RunSpec:
    """The run spec of a version-1 checkpoint, whose dataset and binarisation sat in train_config."""
    train = {k: v for k, v in train_config.items() if k not in ("dataset", "binarize")}
    data = DataSpec(name=dataset, binarize=train_config.get("binarize", DataSpec.binarize))
    return RunSpec(data=data, model=VAEConfig(**model_config), train=TrainConfig(**train))


def _migrate(file: Path, ckpt: dict) -> dict:
    """A version-1 checkpoint's dict in the version-2 layout."""
    missing = {"model_config", "dataset", "train_config", "metrics", "state_dict"} - ckpt.keys()
    if missing:
        raise CheckpointError(f"{file} is missing {', '.join(sorted(missing))}")
    try:
        spec = spec_from_v1(ckpt["model_config"], ckpt["dataset"], ckpt["train_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file} holds a version-1 config that is not valid: {e}") from e
    rest = {k: v for k, v in ckpt.items() if k not in ("model_config", "dataset", "train_config")}
    return rest | {"format_version": FORMAT_VERSION, "spec": spec.to_dict()}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict in the current layout, validated: format version, keys, spec."""
    file = model_file(path)
    ckpt = safe_load(file)
    version = ckpt.get("format_version")
    if version is None:
        raise CheckpointError(f"{file} is not a vae_core checkpoint (no format_version)")
    if version == 1:
        ckpt = _migrate(file, ckpt)
    elif version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format version {version}; this vae_core reads versions 1 and {FORMAT_VERSION}. "
            f"Use a matching vae_core or retrain the model."
        )
    missing = {"spec", "metrics", "state_dict"} - ckpt.keys()
    if missing:
        raise CheckpointError(f"{file} is missing {', '.join(sorted(missing))}")
    read_spec_dict(file, ckpt["spec"])
    return ckpt


def read_spec_dict(file: Path, d: Any) -> RunSpec:
    """A stored spec, typed; CheckpointError naming the file if it is not a valid one."""
    try:
        return RunSpec.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file} holds a run spec that is not valid: {e}") from e


def read_spec(path: str | Path) -> RunSpec:
    """The run spec stored in a checkpoint."""
    return read_spec_dict(model_file(path), read_checkpoint(path)["spec"])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a model from its checkpoint, in eval mode, on `device`; its card is `model.meta`."""
    ckpt = read_checkpoint(path)
    spec = read_spec_dict(model_file(path), ckpt["spec"])
    try:
        model = VAE(spec.model)
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{model_file(path)} does not match its own model config: {e}") from e
    model.meta = CheckpointMeta(
        spec=spec,
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


def list_checkpoints(*roots: str | Path) -> list[Path]:
    """Checkpoint folders (those holding a model file) directly under the given roots, sorted."""
    found = {p.parent for root in roots if Path(root).is_dir() for p in Path(root).glob(f"*/{MODEL_FILE}")}
    return sorted(found)
