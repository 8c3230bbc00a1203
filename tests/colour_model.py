"""A tiny colour model for page tests: a generated folder of colour pictures in three classes (with a
few broken files), trained for a dozen epochs by the app's own trainer (`jobs.start_run`, as the Train
form does) into a runs folder, so that the run has its job file, timelapse and metrics, and its spec
names the folder the Atlas and Encode pages read the test split from.

Use `colour_env` (a module fixture: sets VAE_RUNS_DIR and VAE_CACHE_DIR before a server starts) and
`colour_run` (the trained run's folder) from a test module: `from tests.colour_model import ...`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import environ
from vae_core import jobs
from vae_core.spec import RunSpec

CLASSES = ("discs", "squares", "stripes")
PER_CLASS = 24
SIZES = ((40, 30), (36, 48), (32, 32), (64, 40))  # (width, height): none of them the model's 32 x 32
SIDE = 32  # the model's image size: resize the short side, then centre-crop
TRAIN_TIMEOUT_S = 600
# A conv model small enough to train in seconds on a shared CPU; the likelihood is left to the
# default, which for a colour folder is the 8-bit logistic.
SPEC = RunSpec.from_values(
    {
        "data": {"name": "folder", "image_size": SIDE, "channels": 3, "test_fraction": 0.25},
        "model": {"arch": "conv", "hidden": (8, 16), "latent_dim": 4},
        "train": {"epochs": 12, "batch_size": 16, "lr": 3e-3, "log_every": 2},
    }
)


def _picture(cls: int, i: int, rng: np.random.Generator) -> Image.Image:
    """One picture of class `cls`: a coloured shape on a pale ground, at one of SIZES."""
    width, height = SIZES[i % len(SIZES)]
    ground = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (width, height), ground)
    draw = ImageDraw.Draw(img)
    x, y = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
    r = int(rng.integers(min(width, height) // 4, min(width, height) // 2))
    colour = [(220, 40, 40), (40, 160, 60), (40, 70, 220)][cls]
    if cls == 0:
        draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=colour)
    elif cls == 1:
        draw.rectangle((x, y, x + 2 * r, y + 2 * r), fill=colour)
    else:
        for left in range(x % 8, width, 8):
            draw.rectangle((left, 0, left + 3, height), fill=colour)
    return img


def make_colour_folder(root: Path, seed: int = 0) -> Path:
    """root/<class>/<i>.png (and a few .jpg) for CLASSES, plus three files an import must skip."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            suffix = "jpg" if i % 6 == 5 else "png"
            _picture(c, i, rng).save(root / name / f"{i:02d}.{suffix}")
    (root / "discs" / "empty.png").write_bytes(b"")
    (root / "squares" / "notes.png").write_text("not an image")
    whole = (root / "stripes" / "00.png").read_bytes()
    (root / "stripes" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return root


def train_colour_run(runs: Path, data: Path, name: str = "colour") -> Path:
    """Train SPEC on `data` through the app's job runner; the finished run's folder."""
    run = jobs.start_run(name, SPEC, runs, data_dir=data, device="cpu")
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (run := jobs.read_run(run.path)).status is jobs.Status.RUNNING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the colour run did not finish in {TRAIN_TIMEOUT_S} s: {run.path}")
        time.sleep(0.5)
    if run.status is not jobs.Status.FINISHED:
        log = (run.path / jobs.LOG_FILE).read_text()[-3000:]
        raise RuntimeError(f"the colour run ended {run.status}: {run.message}\n{log}")
    return run.path


@pytest.fixture(scope="module")
def colour_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private runs folder and disk cache for this module (set before any server starts)."""
    base = tmp_path_factory.mktemp("colour")
    with environ(VAE_RUNS_DIR=str(base / "runs"), VAE_CACHE_DIR=str(base / "cache")):
        yield base


@pytest.fixture(scope="module")
def colour_run(colour_env: Path) -> Path:
    """The trained colour run's folder (runs/colour), its images in colour_env/images."""
    return train_colour_run(colour_env / "runs", make_colour_folder(colour_env / "images"))
