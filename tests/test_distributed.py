"""Training under torchrun (DDP, gloo on CPU): identical replicas, one checkpoint, the same loss."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.conftest import synthetic_images
from tests.test_cli import ROOT, idx_folder
from vae_core import DataSpec, RunSpec, TrainConfig, VAEConfig, fit, load_checkpoint
from vae_core.checkpoint import METRICS_FILE

MODEL = VAEConfig(arch="mlp", latent_dim=2, hidden=(32,))
SPEC = RunSpec(
    data=DataSpec(binarize="none"), model=MODEL, train=TrainConfig(epochs=2, batch_size=64, log_every=2)
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    """One rank: join via torchrun's environment variables, train, and dump its final weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    result = fit(
        SPEC,
        Path(tmp) / "ck",
        train_set=synthetic_images(512, 0),
        test_set=synthetic_images(128, 1, split="test"),
        device="cpu",
    )
    torch.save(result.model.state_dict(), Path(tmp) / f"rank{rank}.pt")


def test_two_ranks_stay_identical_write_one_checkpoint_and_match_one_process(tmp_path: Path) -> None:
    """After DDP training both replicas hold the same weights, rank 0 alone wrote the checkpoint and
    log, and the losses match a single-process run with the same global batch and seed."""
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    loaded = load_checkpoint(tmp_path / "ck")
    assert all(torch.equal(v, rank0[k]) for k, v in loaded.state_dict().items())
    assert loaded.meta.epoch == 2 and loaded.meta.metrics["device"] == "cpu x2"

    ddp = [json.loads(line) for line in (tmp_path / "ck" / METRICS_FILE).read_text().splitlines()]
    assert [r["event"] for r in ddp].count("epoch") == 2  # one writer
    single = fit(
        SPEC,
        tmp_path / "single",
        train_set=synthetic_images(512, 0),
        test_set=synthetic_images(128, 1, split="test"),
        device="cpu",
    )
    one = [json.loads(line) for line in (tmp_path / "single" / METRICS_FILE).read_text().splitlines()]
    first = [next(r for r in log if r["event"] == "step") for log in (ddp, one)]
    assert first[0]["step"] == first[1]["step"]
    # Same weights, same images per global batch; only the reparameterisation noise differs.
    assert abs(first[0]["elbo"] - first[1]["elbo"]) < 0.02 * abs(first[1]["elbo"])
    assert abs(loaded.meta.metrics["elbo"] - single.metrics["elbo"]) < 0.05 * abs(single.metrics["elbo"])


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vae_core",
        "train",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_cli_under_torchrun_trains_and_resumes(tmp_path: Path) -> None:
    """`torchrun -m vae_core train` writes a normal checkpoint once, and --resume continues it."""
    data = idx_folder(tmp_path / "data")
    base = [
        "--data-dir",
        str(data),
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ck"),
    ]
    first = torchrun(*base, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert load_checkpoint(tmp_path / "ck").meta.epoch == 1
    resumed = torchrun(*base, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(tmp_path / "ck").meta.epoch == 2
    log = [json.loads(line) for line in (tmp_path / "ck" / METRICS_FILE).read_text().splitlines()]
    assert [r["event"] for r in log].count("epoch") == 2
    assert [r["step"] for r in log if r["event"] == "epoch"] == [4, 8]  # 256 images // 64 per step
