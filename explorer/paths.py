"""Start-up options and paths: `streamlit run app.py -- --checkpoint PATH --data-dir DIR` and
$VAE_CHECKPOINT, resolved and checked once (a bad path becomes a message, never a traceback), and the
folders the checkpoint picker lists. No Streamlit here."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from vae_core import list_checkpoints
from vae_core.checkpoint import MODEL_FILE
from vae_core.jobs import runs_dir
from vae_core.onnx_model import is_onnx_folder

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = "checkpoints/mnist-2d"
PAGES = {  # the sidebar's links: home, then every file in pages/ as Streamlit names it ("1_Latent_grid.py")
    "app.py": "Overview",
    **{
        f"pages/{p.name}": re.sub(r"^\d+_", "", p.stem).replace("_", " ")
        for p in sorted((PROJECT_ROOT / "pages").glob("*.py"))
    },
}


@dataclass(frozen=True)
class Checkpoint:
    """The selected checkpoint as cache keys: its folder (as shown) and the model file's mtime."""

    name: str
    mtime: float

    @property
    def path(self) -> Path:
        return resolve(self.name)


@dataclass(frozen=True)
class Startup:
    """The start-up options, checked: what to use, and a message for each option that was refused."""

    checkpoint: str | None  # as the picker shows it
    data_dir: str | None
    problems: tuple[str, ...] = ()


def startup() -> Startup:
    """The options of this server process (parsed and checked once per argv and environment)."""
    return _startup(tuple(sys.argv[1:]), os.environ.get("VAE_CHECKPOINT"))


@functools.cache
def _startup(argv: tuple[str, ...], env_checkpoint: str | None) -> Startup:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoint")
    parser.add_argument("--data-dir")
    args = parser.parse_known_args(argv)[0]  # unknown arguments are Streamlit's business
    problems = []
    checkpoint, origin = (
        (args.checkpoint, "--checkpoint") if args.checkpoint else (env_checkpoint, "VAE_CHECKPOINT")
    )
    if checkpoint:
        checkpoint, problem = _checked_checkpoint(checkpoint, origin)
        problems += [problem] if problem else []
    data_dir, problem = _checked_folder(args.data_dir, "--data-dir") if args.data_dir else (None, None)
    problems += [problem] if problem else []
    return Startup(checkpoint, data_dir, tuple(problems))


def _checked_checkpoint(wanted: str, origin: str) -> tuple[str | None, str | None]:
    """A checkpoint folder (or its model file) as the picker shows it, or None and why not."""
    folder = Path(wanted).parent if Path(wanted).suffix == ".pt" else Path(wanted)
    try:
        folder = folder.resolve(strict=True)
        if not (folder / MODEL_FILE).is_file() and not is_onnx_folder(folder):
            return None, f"{origin} {wanted!r} holds no {MODEL_FILE}: give a checkpoint folder."
    except (OSError, RuntimeError) as e:  # missing, unreadable, or a symlink loop
        return None, f"{origin} {wanted!r} cannot be opened ({_reason(e)}): give a checkpoint folder."
    return shown(folder), None


def _checked_folder(wanted: str, origin: str) -> tuple[str | None, str | None]:
    try:
        folder = Path(wanted).resolve(strict=True)
        if folder.is_dir():
            return str(folder), None
        return None, f"{origin} {wanted!r} is not a folder: it is ignored."
    except (OSError, RuntimeError) as e:
        return None, f"{origin} {wanted!r} cannot be opened ({_reason(e)}): it is ignored."


def _reason(error: Exception) -> str:
    return "a symlink loop" if isinstance(error, RuntimeError) else (error.strerror or str(error))


def shown(path: str | Path) -> str:
    """A checkpoint folder as the picker shows it: relative to the project when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def resolve(name: str) -> Path:
    """The folder of a checkpoint shown as `name` (relative names are inside the project)."""
    return PROJECT_ROOT / name if not Path(name).is_absolute() else Path(name)


def checkpoint_options() -> list[str]:
    """Shipped and trained checkpoints, plus the one asked for at start wherever it lives."""
    options = [shown(p) for p in list_checkpoints(PROJECT_ROOT / "checkpoints", runs_dir())]
    start = startup().checkpoint
    return [*options, start] if start and start not in options else options


def data_dir() -> str | None:
    """The --data-dir folder, if one was given and exists."""
    return startup().data_dir
