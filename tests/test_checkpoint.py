"""Checkpoints: round trips, atomic writes, and refusal of unsafe, truncated or foreign files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from vae_core import (
    VAE,
    CheckpointError,
    DataSpec,
    RunSpec,
    TrainConfig,
    VAEConfig,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from vae_core.checkpoint import FORMAT_VERSION, MODEL_FILE, read_checkpoint, update_metrics


def saved(path: Path, config: VAEConfig | None = None) -> VAE:
    model = VAE(config or VAEConfig(arch="conv", latent_dim=3, hidden=(4, 8)))
    spec = RunSpec(data=DataSpec("fashion-mnist", "dynamic"), model=model.config, train=TrainConfig(epochs=2))
    save_checkpoint(path, model, spec=spec, metrics={"elbo": -100.0}, epoch=2, step=20)
    return model


def test_round_trip_restores_weights_config_and_card(tmp_path: Path) -> None:
    """A saved model loads back with identical outputs, its config, dataset, metrics and epoch."""
    model = saved(tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    assert loaded.config == model.config and not loaded.training
    assert loaded.meta.dataset == "fashion-mnist" and loaded.meta.metrics == {"elbo": -100.0}
    assert loaded.meta.epoch == 2 and loaded.meta.spec.train.epochs == 2
    assert load_checkpoint(tmp_path / "ck" / MODEL_FILE).config == model.config


def test_half_precision_storage_loads_as_float32(tmp_path: Path) -> None:
    """Weights stored in float16 come back as float32 within half-precision rounding."""
    model = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    save_checkpoint(
        tmp_path / "h",
        model,
        spec=RunSpec(model=model.config),
        metrics={},
        epoch=0,
        step=0,
        dtype=torch.float16,
    )
    loaded = load_checkpoint(tmp_path / "h")
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(
        loaded.decode(torch.ones(1, 2)), model.decode(torch.ones(1, 2)), atol=0.01, rtol=0
    )


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_poisoned_checkpoint_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickle whose unpickling would run a shell command is refused, and the command never runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil").mkdir()
    torch.save({"format_version": FORMAT_VERSION, "payload": _Exploit()}, tmp_path / "evil" / MODEL_FILE)
    with pytest.raises(CheckpointError, match=r"could\s+run code"):
        load_checkpoint(tmp_path / "evil")
    assert not (tmp_path / "pwned").exists()


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    """A raw pickle (not a torch zip) with a code-running payload is refused too."""
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (Path.cwd() / "pwned").exists()


def test_truncated_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    """Half a checkpoint file is reported as truncated."""
    saved(tmp_path / "ck")
    file = tmp_path / "ck" / MODEL_FILE
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"is truncated: it starts like a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"weights": torch.zeros(1)}, "not a vae_core checkpoint"),
        ({"format_version": 99}, "format version 99"),
        ({"format_version": FORMAT_VERSION}, "missing"),
        (torch.zeros(3), "not a vae_core checkpoint"),
    ],
)
def test_foreign_and_future_checkpoints_are_refused(tmp_path: Path, content: object, message: str) -> None:
    """Files without our keys, or of an unknown format version, say so."""
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "x.pt")


def test_missing_checkpoint_and_mismatched_weights(tmp_path: Path) -> None:
    """No file, and weights that do not fit the stored config, are CheckpointErrors."""
    with pytest.raises(CheckpointError, match=r"No checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    saved(tmp_path / "ck")
    ckpt = read_checkpoint(tmp_path / "ck")
    ckpt["spec"]["model"]["latent_dim"] = 7
    torch.save(ckpt, tmp_path / "ck" / MODEL_FILE)
    with pytest.raises(CheckpointError, match=r"does not match"):
        load_checkpoint(tmp_path / "ck")


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails midway leaves the previous checkpoint intact and no temporary file."""
    saved(tmp_path / "ck")
    before = (tmp_path / "ck" / MODEL_FILE).read_bytes()

    def broken_save(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match=r"disk full"):
        saved(tmp_path / "ck")
    assert (tmp_path / "ck" / MODEL_FILE).read_bytes() == before
    assert os.listdir(tmp_path / "ck") == [MODEL_FILE]


def test_update_metrics_merges_and_listing_finds_folders(tmp_path: Path) -> None:
    """Metrics written by evaluate merge into the card; list_checkpoints finds checkpoint folders."""
    saved(tmp_path / "a")
    saved(tmp_path / "b")
    (tmp_path / "not-a-checkpoint").mkdir()
    update_metrics(tmp_path / "a", {"nll": 90.5, "nll_k": 5000})
    assert load_checkpoint(tmp_path / "a").meta.metrics == {"elbo": -100.0, "nll": 90.5, "nll_k": 5000}
    assert list_checkpoints(tmp_path, tmp_path / "missing") == [tmp_path / "a", tmp_path / "b"]
