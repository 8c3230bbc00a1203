"""Checkpoints: one folder per model, written atomically, loaded without executing code.

    checkpoints/NAME/model.pt        weights, run spec (data, model, training), metrics, position, version
    checkpoints/NAME/train_state.pt  optimizer, RNG and position, for --resume (not shipped)
    checkpoints/NAME/metrics.jsonl   the training log (`vae_core.records`)

Both `.pt` files are plain dicts of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`, which refuses any pickled object that could run code. Format
version 2 stores the `RunSpec` as `spec`; version 1 files (separate model config, dataset and
training config) are read through `spec_from_v1`.

A file is checked before anything in it is allocated, since a few bytes can declare a huge model:
its zip listing first (torch.save writes an uncompressed zip with a small pickle), then it is
loaded memory-mapped, so that tensors stay on disk while the stored model config is checked
against the memory budget (`vae_core.budget`) and every tensor's declared shape against the shapes
that config implies. Only then are the weights read, and refused if any is NaN or infinite.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vae_core import budget
from vae_core.atomic import atomic_write
from vae_core.model import VAE, CheckpointMeta
from vae_core.records import METRICS_FILE as METRICS_FILE  # re-exported: the folder's files
from vae_core.spec import DataSpec, RunSpec, TrainConfig, VAEConfig

FORMAT_VERSION = 2
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes begins
# The pickled part of a checkpoint (data.pkl) holds the spec, the metrics and references to the
# tensors: a few kB. Unpickled objects take up to ~30x their pickle, so this caps them at ~30 MB.
MAX_PICKLE_BYTES = 2**20


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, foreign, unsafe or of an unknown format version.

    `path` is the file it is about (None if none), so that a UI can show it as literal text."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


def model_file(path: str | Path) -> Path:
    """The model file of a checkpoint given as its folder or as the file itself."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() or not path.suffix else path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through the one atomic writer: readers never see half a file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _reason(e: BaseException) -> str:
    """An exception's first line, or its type when it has no message: never an empty reason."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _check_archive(path: Path) -> None:
    """Refuse, from its first bytes and zip listing alone, a file torch.save did not write."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): it is not a checkpoint", path)
    with path.open("rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint file: it does not start like one (torch.save "
                f"writes a zip archive)",
                path,
            )
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise CheckpointError(
            f"{path} is truncated: it starts like a PyTorch checkpoint, but its zip archive has no "
            f"valid end, as when a copy or a write stopped early",
            path,
        ) from e
    pickles = [entry for entry in entries if entry.filename.endswith("/data.pkl")]
    compressed = [entry.filename for entry in entries if entry.compress_type != zipfile.ZIP_STORED]
    if len(pickles) != 1:
        raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl)", path)
    if compressed:
        raise CheckpointError(
            f"{path} holds compressed entries ({', '.join(compressed[:3])}), which torch.save never "
            f"writes: refused, as their unpacked size is unknown until they are unpacked",
            path,
        )
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path} holds {pickles[0].file_size:,} bytes of pickled data; a vae_core checkpoint holds a "
            f"few thousand (at most {MAX_PICKLE_BYTES:,} are read)",
            path,
        )
    with zipfile.ZipFile(path) as archive:
        ends_with_stop = archive.read(pickles[0])[-1:] == pickle.STOP
    if not ends_with_stop:  # every complete pickle ends with STOP; a cut one may end inside a name
        raise CheckpointError(
            f"{path} is damaged: it is a complete PyTorch archive, but its contents cannot be read "
            f"(its pickled part is cut short: it does not end with the pickle STOP opcode)",
            path,
        )


def _unsafe_names(e: pickle.UnpicklingError) -> str:
    """The refused global a weights-only load names, e.g. ' (posix.system)'; empty if none."""
    found = re.search(r"GLOBAL (\S+)", str(e))
    return f" ({found.group(1)})" if found else ""


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _tensors(value)


def materialised(obj: Any) -> Any:
    """`obj` with every (memory-mapped) tensor copied into memory, so that the file may change."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: materialised(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(materialised(v) for v in obj)
    return obj


def safe_load(path: Path, map_location: str | torch.device = "cpu", *, mapped: bool = False) -> dict:
    """torch.load with weights_only=True, every failure turned into a CheckpointError.

    The file is memory-mapped, so that the tensors it declares are measured against the memory
    budget before they are read. With mapped=True they stay mapped (read from disk when used), for
    the caller to check their shapes first and then call `materialised`; a mapped tensor must not
    outlive a rewrite of its file in place."""
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}", path)
    _check_archive(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"Refused to load {path}: it holds pickled objects other than tensors and plain data"
            f"{_unsafe_names(e)}, which could run code when unpickled. Only load checkpoints written by "
            f"vae_core.",
            path,
        ) from e
    except Exception as e:  # a damaged record, a pickle cut short, a storage of the wrong size
        raise CheckpointError(
            f"{path} is damaged: it is a complete PyTorch archive, but its contents cannot be read "
            f"({_reason(e)})",
            path,
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a vae_core checkpoint (it holds a {type(obj).__name__})", path)
    declared, limit = sum(t.numel() * t.element_size() for t in _tensors(obj)), budget.budget_bytes()
    if declared > limit:
        raise CheckpointError(
            f"{path} declares {budget.shown_bytes(declared)} of tensors, more than the memory budget of "
            f"{budget.shown_bytes(limit)} (set by the operator with {budget.BUDGET_ENV})",
            path,
        )
    return obj if mapped else materialised(obj)


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
        raise CheckpointError(f"{file} is missing {', '.join(sorted(missing))}", file)
    try:
        spec = spec_from_v1(ckpt["model_config"], ckpt["dataset"], ckpt["train_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file} holds a version-1 config that is not valid: {e}", file) from e
    rest = {k: v for k, v in ckpt.items() if k not in ("model_config", "dataset", "train_config")}
    return rest | {"format_version": FORMAT_VERSION, "spec": spec.to_dict()}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict in the current layout, validated: format version, keys, spec, weights."""
    file = model_file(path)
    ckpt = safe_load(file, mapped=True)
    version = ckpt.get("format_version")
    if version is None:
        raise CheckpointError(f"{file} is not a vae_core checkpoint (no format_version)", file)
    if version == 1:
        ckpt = _migrate(file, ckpt)
    elif version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format version {version}; this vae_core reads versions 1 and {FORMAT_VERSION}. "
            f"Use a matching vae_core or retrain the model.",
            file,
        )
    missing = {"spec", "metrics", "state_dict"} - ckpt.keys()
    if missing:
        raise CheckpointError(f"{file} is missing {', '.join(sorted(missing))}", file)
    check_weights(file, read_spec_dict(file, ckpt["spec"]).model, ckpt["state_dict"])
    return materialised(ckpt)


def check_weights(file: Path, config: VAEConfig, state_dict: Any) -> None:
    """Refuse weights that the config does not imply, or that are NaN or infinite.

    The config is checked against the memory budget and every tensor's declared shape against the
    config's before any value is read: `state_dict` may hold memory-mapped tensors of any size."""
    try:
        budget.check(config, training=False)
    except budget.BudgetError as e:
        raise CheckpointError(f"{file} declares a model too large to load: {e}", file) from e
    expected = budget.state_shapes(config)
    if not isinstance(state_dict, dict) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        raise CheckpointError(
            f"{file} does not match its own model config: its weights are not tensors", file
        )
    if state_dict.keys() != expected.keys():
        missing, extra = (
            sorted(expected.keys() - state_dict.keys()),
            sorted(state_dict.keys() - expected.keys()),
        )
        raise CheckpointError(
            f"{file} does not match its own model config: missing weights {missing or 'none'}, "
            f"unexpected weights {extra or 'none'}",
            file,
        )
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                f"{file} does not match its own model config: {name} has shape {tuple(tensor.shape)}, "
                f"the config implies {expected[name]}",
                file,
            )
        if not tensor.is_floating_point():
            raise CheckpointError(f"{file}: the weights {name} are {tensor.dtype}, not floating point", file)
    for name, tensor in state_dict.items():  # every shape is the config's: now the values may be read
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise CheckpointError(
                f"{file} holds non-finite weights: {bad:,} of the {tensor.numel():,} values of {name} are "
                f"NaN or infinite, so every decoded image would be meaningless. Retrain the model, or "
                f"use a checkpoint saved before training diverged.",
                file,
            )


def read_spec_dict(file: Path, d: Any) -> RunSpec:
    """A stored spec, typed; CheckpointError naming the file if it is not a valid one."""
    try:
        return RunSpec.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file} holds a run spec that is not valid: {e}", file) from e


def read_spec(path: str | Path) -> RunSpec:
    """The run spec stored in a checkpoint."""
    return read_spec_dict(model_file(path), read_checkpoint(path)["spec"])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a model from its checkpoint, in eval mode, on `device`; its card is `model.meta`.

    A folder holding a `vae.json` is an ONNX model (`vae_core.onnx_model`): an `OnnxVAE` then, with
    the same contract."""
    from vae_core import onnx_model  # not at the top: it imports this module

    if onnx_model.is_onnx_folder(path):
        return onnx_model.load_onnx(path)  # type: ignore[return-value]
    file = model_file(path)
    ckpt = read_checkpoint(path)  # checked: the model fits the budget, the weights fit the model
    spec = read_spec_dict(file, ckpt["spec"])
    try:
        model = VAE(spec.model)
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file} does not match its own model config: {e}", file) from e
    model.meta = CheckpointMeta(
        spec=spec,
        metrics=ckpt["metrics"],
        epoch=ckpt.get("epoch", 0),
        step=ckpt.get("step", 0),
        path=str(file.parent),
    )
    return model.to(device).eval()


def update_metrics(path: str | Path, metrics: dict) -> None:
    """Merge `metrics` into a checkpoint's stored metrics (e.g. after `evaluate --write`)."""
    ckpt = read_checkpoint(path)
    ckpt["metrics"] = {**ckpt["metrics"], **metrics}
    atomic_save(ckpt, model_file(path))


def list_checkpoints(*roots: str | Path) -> list[Path]:
    """Checkpoint folders (those holding a model file, or an ONNX model's `vae.json`) directly under
    the given roots, sorted."""
    from vae_core.onnx_model import MANIFEST_FILE

    found = {
        p.parent
        for root in roots
        if Path(root).is_dir()
        for name in (MODEL_FILE, MANIFEST_FILE)
        for p in Path(root).glob(f"*/{name}")
    }
    return sorted(found)
