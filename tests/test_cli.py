"""The command line: flags, a train -> evaluate round trip, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_MNIST, synthetic_images
from tests.test_data import write_idx
from vae_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def idx_folder(folder: Path) -> Path:
    """A --data-dir with small synthetic train and test splits."""
    folder.mkdir()
    for prefix, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
        data = synthetic_images(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", data.images[:, 0].numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", data.labels.numpy())
    return folder


def python_m(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vae_core", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_help_explains_every_documented_flag() -> None:
    """`train --help` and `evaluate --help` list the public flags."""
    train = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for flag in (
        "--dataset",
        "--data-dir",
        "--arch",
        "--hidden",
        "--latent-dim",
        "--batch-size",
        "--epochs",
        "--lr",
        "--out",
        "--beta",
        "--warmup-epochs",
        "--binarize",
        "--seed",
        "--device",
        "--resume",
        "--precision",
    ):
        assert flag in train
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()  # type: ignore[union-attr]
    assert all(flag in evaluate for flag in ("--data-dir", "--k", "--json"))


def test_train_then_evaluate_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Training writes a checkpoint; evaluate --json --write prints and stores ELBO, NLL, active units."""
    data = idx_folder(tmp_path / "data")
    out = tmp_path / "ck"
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(data),
                "--hidden",
                "32",
                "16",
                "--latent-dim",
                "3",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(data), "--k", "20", "--json", "--write"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_images"] == 64 and metrics["nll_k"] == 20 and metrics["nll_n"] == 64
    assert metrics["nll"] <= -metrics["elbo"] + 1.0  # the IWAE bound is tighter than the ELBO
    assert metrics["elbo"] == pytest.approx(-(metrics["recon"] + metrics["kl"]))
    assert len(metrics["kl_per_dim"]) == 3 and 0 <= metrics["active_units"] <= 3
    from vae_core import load_checkpoint

    assert load_checkpoint(out).meta.metrics["nll"] == metrics["nll"]

    # --nll-n: the NLL on the first 10 images only, the ELBO still on all 64.
    assert main(["evaluate", str(out), "--data-dir", str(data), "--k", "20", "--nll-n", "10", "--json"]) == 0
    part = json.loads(capsys.readouterr().out)
    assert part["n_images"] == 64 and part["nll_n"] == 10 and part["elbo"] == metrics["elbo"]
    assert main(["evaluate", str(out), "--data-dir", str(data), "--k", "20", "--n", "10", "--json"]) == 0
    assert part["nll"] == json.loads(capsys.readouterr().out)["nll"]  # the same seeded draws
    # a partial NLL written, then a whole one: the card no longer says "first 10"
    assert main(["evaluate", str(out), "--data-dir", str(data), "--k", "20", "--nll-n", "10", "--write"]) == 0
    assert "NLL (k=20, first 10 images)" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data-dir", str(data), "--k", "20", "--write"]) == 0
    assert load_checkpoint(out).meta.metrics["nll_n"] == 64 and "first" not in capsys.readouterr().out


def test_resume_extends_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--resume with a larger --epochs continues from the stored epoch with the stored settings,
    learning rate and precision among them."""
    data = idx_folder(tmp_path / "data")
    out = str(tmp_path / "ck")
    base = [
        "train",
        "--data-dir",
        str(data),
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--batch-size",
        "128",
        "--out",
        out,
        "--device",
        "cpu",
    ]
    assert main([*base, "--epochs", "1", "--lr", "3e-3", "--precision", "bf16"]) == 0
    assert main([*base, "--epochs", "3", "--resume"]) == 0
    from vae_core import load_checkpoint

    model = load_checkpoint(out)
    assert model.meta.epoch == 3 and model.meta.spec.train.lr == 3e-3
    assert model.meta.spec.train.precision == "bf16" and model.meta.spec.train.epochs == 3
    assert main([*base, "--epochs", "4", "--resume", "--beta", "2"]) == 1  # only --epochs may change
    assert "--beta differ" in capsys.readouterr().err and load_checkpoint(out).meta.epoch == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "epochs must be between 1 and 100000, got 0"),
        (["--threads", "0"], "threads must be between 1 and 1024, got 0"),
        (["--threads", "-1"], "threads must be between 1 and 1024, got -1"),
        (["--seed", "-3"], "seed must be between 0 and 2147483647, got -3"),
        (["--latent-dim", "100000"], "latent_dim must be between 1 and 512, got 100000"),
        (["--hidden", "400", "99999999"], "hidden must be between 1 and 8192, got (400, 99999999)"),
        (["--lr", "inf"], "lr must be a finite number, got inf"),
    ],
)
def test_out_of_range_flags_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    """A value outside its option's range ends with exit 1 and an error naming the option, the value
    and the range, before anything is written."""
    assert main(["train", "--out", str(tmp_path / "ck"), *flags]) == 1
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    """A missing dataset and a poisoned checkpoint end with exit 1 and a message, never a traceback."""
    missing = python_m("train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "ck"), "--epochs", "1")
    assert missing.returncode == 1
    assert "error: The mnist train split was not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    (tmp_path / "evil").mkdir()
    torch.save({"format_version": 1, "x": os.system}, tmp_path / "evil" / "model.pt")
    evil = python_m("evaluate", str(tmp_path / "evil"), "--k", "1")
    assert evil.returncode == 1 and "Refused to load" in evil.stderr and "Traceback" not in evil.stderr


@pytest.mark.slow
def test_real_mnist_train_and_evaluate(tmp_path: Path) -> None:
    """One epoch on real MNIST through `python -m vae_core` reaches a sensible ELBO; evaluate reads it."""
    if not SHARED_MNIST.is_dir():
        pytest.skip("../shared/mnist not present")
    out = tmp_path / "ck"
    train = python_m(
        "train",
        "--data-dir",
        str(SHARED_MNIST),
        "--hidden",
        "128",
        "--latent-dim",
        "8",
        "--epochs",
        "1",
        "--out",
        str(out),
    )
    assert train.returncode == 0, train.stderr
    result = python_m(
        "evaluate", str(out), "--data-dir", str(SHARED_MNIST), "--k", "50", "--n", "500", "--json"
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert -160 < metrics["elbo"] < -95 and metrics["nll"] < -metrics["elbo"]


def colour_folder(root: Path, n_per_class: int = 18) -> Path:
    """A folder of 40 x 30 random-ish RGB PNGs in two classes, one reddish and one bluish."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for k, cls in enumerate(("red", "blue")):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = torch.randint(0, 128, (30, 40, 3), generator=rng, dtype=torch.uint8)
            pixels[..., 2 * k] += 127
            Image.fromarray(pixels.numpy()).save(root / cls / f"{i}.png")
    return root


def test_train_on_a_colour_folder_then_evaluate_reports_bits_per_dim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A logistic conv model trains on a folder of colour PNGs (the import report on stderr), stores the
    folder's absolute path and the data's shape in its spec, and evaluate --json gives finite bits/dim."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    data, out = colour_folder(tmp_path / "pictures"), tmp_path / "ck"
    monkeypatch.chdir(tmp_path)  # a relative --data-dir is stored absolute
    flags = ["--dataset", "folder", "--data-dir", "pictures", "--image-size", "16", "--channels", "3"]
    model = ["--likelihood", "logistic", "--arch", "conv", "--hidden", "4", "8"]  # binarize: none
    run = ["--latent-dim", "2", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--device", "cpu"]
    assert main(["train", *flags, *model, *run]) == 0
    assert "Imported 36 of 36 images" in capsys.readouterr().err
    from vae_core import load_checkpoint

    spec = load_checkpoint(out).meta.spec
    assert spec.data.folder == str(data.resolve()) and spec.model.image_shape == (3, 16, 16)
    monkeypatch.chdir(ROOT)  # evaluate finds the folder through the spec, without --data-dir
    assert main(["evaluate", str(out), "--k", "5", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["bits_per_dim_from"] == "nll" and 0 < metrics["bits_per_dim"] < 100
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (3 * 16 * 16 * math.log(2)))
