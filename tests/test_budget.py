"""The memory budget: estimates from the config, refusals by fit, start_run and checkpoint loading."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vae_core import VAE, CheckpointError, RunSpec, TrainConfig, VAEConfig, fit, jobs, save_checkpoint
from vae_core.budget import BUDGET_ENV, GIB, BudgetError, budget_bytes, check, estimate, state_shapes
from vae_core.checkpoint import MODEL_FILE, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HUGE_MLP = VAEConfig(hidden=(8192,) * 8, latent_dim=512)  # 965M weights: 3.6 GiB, 14.6 GiB to train
MAX_RSS_GROWTH_MB = 200


def test_estimate_counts_the_models_weights_and_every_layers_outputs() -> None:
    """An mlp 784-32-2's estimate: its exact parameter count, and per image the input plus each
    layer's output (784 flat, 32, 32, 4 | 32, 32, 784, 784), twice for training (their gradients)."""
    config = VAEConfig(hidden=(32,), latent_dim=2)
    e = estimate(RunSpec(model=config, train=TrainConfig(batch_size=10)))
    params = (784 * 32 + 32) + (32 * 4 + 4) + (2 * 32 + 32) + (32 * 784 + 784)
    assert e.params == params == sum(p.numel() for p in VAE(config).parameters())
    outputs = 784 + (784 + 32 + 32 + 4) + (32 + 32 + 784 + 784)
    assert e.activation_bytes == 10 * outputs * 4 * 2
    assert e.total_bytes == 4 * params * 4 + e.activation_bytes
    use = estimate(config, 10, training=False)
    assert use.total_bytes == params * 4 + 10 * outputs * 4


def test_state_shapes_are_the_built_models(config: VAEConfig) -> None:
    """The shapes a config implies are exactly those of the model the builder makes."""
    assert state_shapes(config) == {k: tuple(v.shape) for k, v in VAE(config).state_dict().items()}


def test_the_budget_is_the_operators_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 GiB by default, VAE_MEMORY_BUDGET_GB when set; a value that is not a positive number says so."""
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget_bytes() == 4 * GIB
    monkeypatch.setenv(BUDGET_ENV, "20")
    assert budget_bytes() == 20 * GIB
    check(RunSpec(model=HUGE_MLP))  # 14.5 GiB fits in 20
    for bad in ("-1", "nan", "lots"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(BudgetError, match=f"{BUDGET_ENV} must be a positive number of GiB.*{bad}"):
            budget_bytes()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RunSpec(model=HUGE_MLP), r"about 14\.63 GiB: 3\.60 GiB of weights \(965,084,944 parameters\)"),
        (
            RunSpec(model=VAEConfig(arch="conv", hidden=(512, 512)), train=TrainConfig(batch_size=65536)),
            r"821\.52 GiB of activations for a batch of 65,536 images",
        ),
    ],
    ids=["wide-mlp", "conv-big-batch"],
)
def test_fit_and_start_run_refuse_a_model_over_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: RunSpec, message: str
) -> None:
    """Hidden sizes or a batch too large for the budget are refused, with the size and the limit,
    before fit builds anything and before start_run creates a folder or a process."""
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    limit = r"more than the memory budget of 4\.00 GiB \(set by the operator with VAE_MEMORY_BUDGET_GB\)"
    built: list[VAEConfig] = []
    monkeypatch.setattr("vae_core.training.VAE", lambda config: built.append(config))
    with pytest.raises(BudgetError, match=f"{message}.*{limit}"):
        fit(spec, tmp_path / "ck", device="cpu")
    assert built == [] and not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match=f"{message}.*{limit}"):  # the Train page shows ValueErrors
        jobs.start_run("big", spec, tmp_path / "runs", device="cpu")
    assert not (tmp_path / "runs" / "big").exists()


def peak_rss_growth(script: str) -> dict:
    """Run `script` (which sets `error`) after importing vae_core; its peak RSS growth in MB."""
    code = (
        "import json, resource, torch, vae_core\n"
        "from vae_core.checkpoint import read_checkpoint, load_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "error = ''\n" + script + "\n"
        "growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "print(json.dumps({'growth_mb': growth, 'error': error}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def loading(path: Path) -> str:
    return (
        f"try:\n    load_checkpoint({str(path)!r})\n"
        f"except vae_core.CheckpointError as e:\n    error = str(e)\n"
    )


def small_checkpoint(folder: Path) -> dict:
    model = VAE(VAEConfig(hidden=(16,)))
    save_checkpoint(folder, model, spec=RunSpec(model=model.config), metrics={}, epoch=1, step=1)
    return read_checkpoint(folder)


def test_a_checkpoint_declaring_a_huge_model_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """A small file whose stored config declares a 3.6 GiB model is refused by the budget, with its
    size, while memory grows by little (building it first took gigabytes)."""
    ckpt = small_checkpoint(tmp_path / "ck")
    ckpt["spec"]["model"] |= {"hidden": [8192] * 8, "latent_dim": 512}
    torch.save(ckpt, tmp_path / "ck" / MODEL_FILE)
    result = peak_rss_growth(loading(tmp_path / "ck"))
    assert "declares a model too large to load" in result["error"]
    assert "3.60 GiB of weights (965,084,944 parameters)" in result["error"]
    assert result["growth_mb"] < MAX_RSS_GROWTH_MB


def test_a_tensor_larger_than_its_config_implies_is_refused_unread(tmp_path: Path) -> None:
    """A weight declared far larger than the config implies is refused by its shape before any of
    it is read: a 256 MB tensor on disk (memory-mapped, not loaded), and a 1-element float16 storage
    expanded to 500M values (whose conversion to float32 took 2 GB)."""
    ckpt = small_checkpoint(tmp_path / "ck")
    ckpt["state_dict"]["encoder.1.weight"] = torch.zeros(2**26)  # 256 MB of float32
    torch.save(ckpt, tmp_path / "ck" / MODEL_FILE)
    on_disk = peak_rss_growth(loading(tmp_path / "ck"))
    (tmp_path / "ck" / MODEL_FILE).unlink()
    ckpt["state_dict"]["encoder.1.weight"] = torch.zeros(1, dtype=torch.float16).expand(500_000, 1000)
    torch.save(ckpt, tmp_path / "ck" / MODEL_FILE)
    expanded = peak_rss_growth(loading(tmp_path / "ck"))
    for result, shape in ((on_disk, "(67108864,)"), (expanded, "(500000, 1000)")):
        assert f"encoder.1.weight has shape {shape}, the config implies (16, 784)" in result["error"]
        assert result["growth_mb"] < MAX_RSS_GROWTH_MB


def test_a_file_declaring_more_tensor_bytes_than_the_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any file (a training state too) whose tensors total more than the budget is refused unread."""
    small_checkpoint(tmp_path / "ck")
    monkeypatch.setenv(BUDGET_ENV, str(1 / 1024))  # 1 MiB
    torch.save({"optimizer": {"state": {0: torch.zeros(2**19)}}}, tmp_path / "state.pt")  # 2 MiB
    from vae_core.checkpoint import safe_load

    with pytest.raises(
        CheckpointError, match=r"declares 2\.0 MiB of tensors, more than the memory budget of 1\.0"
    ):
        safe_load(tmp_path / "state.pt")
    assert math.isclose(budget_bytes(), 2**20)
