"""Start-up options and paths: `streamlit run app.py -- --checkpoint PATH --data-dir DIR` and
$VAE_CHECKPOINT, resolved and checked once (a bad path becomes a message, never a traceback), the
folders the checkpoint picker lists, and where uploads go: a zipped ONNX model unpacked and checked
under `<runs folder>/imported/`, a zip of images under `<runs folder>/uploads/` (never elsewhere, by
`vae_core.archive`). No Streamlit here."""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vae_core import list_checkpoints, load_checkpoint
from vae_core import onnx_model as om
from vae_core.archive import ArchiveError, Limits, Unpacked, unpack_zip
from vae_core.checkpoint import MODEL_FILE, CheckpointError
from vae_core.folder import IMAGE_SUFFIXES
from vae_core.jobs import runs_dir
from vae_core.onnx_model import is_onnx_folder
from vae_core.preprocess import MAX_FILE_BYTES

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


_WHAT_TO_OPEN = "give a checkpoint folder, its model.pt, or an ONNX model folder"


def _checked_checkpoint(wanted: str, origin: str) -> tuple[str | None, str | None]:
    """A checkpoint folder (or its model file) as the picker shows it, or None and why not."""
    folder = Path(wanted).parent if Path(wanted).suffix == ".pt" else Path(wanted)
    try:
        folder = folder.resolve(strict=True)
        if not (folder / MODEL_FILE).is_file() and not is_onnx_folder(folder):
            return None, f"{origin} {wanted!r} holds no {MODEL_FILE} or {om.MANIFEST_FILE}: {_WHAT_TO_OPEN}."
    except (OSError, RuntimeError) as e:  # missing, unreadable, or a symlink loop
        return None, f"{origin} {wanted!r} cannot be opened ({_reason(e)}): {_WHAT_TO_OPEN}."
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


def checkpoint_options(opened: Sequence[str] = ()) -> list[str]:
    """Shipped, trained and imported checkpoints, plus the one asked for at start and those `opened`
    by path in this session, wherever they live."""
    roots = (PROJECT_ROOT / "checkpoints", runs_dir(), imported_dir())
    options = [shown(p) for p in list_checkpoints(*roots) if not p.name.startswith(".")]  # not unpacking
    extra = [name for name in dict.fromkeys([startup().checkpoint, *opened]) if name]
    return options + [name for name in extra if name not in options]


def data_dir() -> str | None:
    """The --data-dir folder, if one was given and exists."""
    return startup().data_dir


# ---------------------------------------------------------------- opening a model, uploads

IMPORTED, UPLOADS = "imported", "uploads"  # folders of the runs folder
MAX_NAME_CHARS = 60  # of an upload's folder name, before its content hash
HASH_CHARS = 8  # hex digits of the upload's SHA-256 in its folder name
MODEL_FILES = (*om.FILES, om.EVALUATION_FILE)  # what a zipped ONNX model may hold; the rest is skipped
MODEL_ZIP = Limits(
    max_files=4 * len(MODEL_FILES),  # the files, their folder, and macOS's copies of each
    max_total_bytes=2 * om.MAX_ONNX_BYTES + 2 * om.MAX_JSON_BYTES,
    max_entry_bytes=om.MAX_ONNX_BYTES,
    allowed_suffixes=(".onnx", ".json"),
    strip_top=True,
)
IMAGE_ZIP = Limits(
    max_files=200_000,
    max_total_bytes=2**32,  # 4 GiB on the server's disk
    max_entry_bytes=MAX_FILE_BYTES,  # an import skips larger files anyway
    allowed_suffixes=IMAGE_SUFFIXES,
    strip_top=True,
)


def imported_dir() -> Path:
    """Where uploaded ONNX models are unpacked: `<runs folder>/imported/` (listed by the picker)."""
    return runs_dir() / IMPORTED


def uploads_dir() -> Path:
    """Where uploaded zips of images are unpacked for training: `<runs folder>/uploads/`."""
    return runs_dir() / UPLOADS


def upload_folder_name(file_name: str, data: bytes) -> str:
    """A safe folder name for an upload: its file name's stem (other characters as '-'), then a hash
    of its bytes, so that the same upload twice is the same folder, e.g. `my-model-1a2b3c4d`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(file_name).stem).strip(".-_")[:MAX_NAME_CHARS]
    return f"{stem or 'upload'}-{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}"


def open_path(wanted: str) -> str:
    """A checkpoint folder, its model.pt or an ONNX folder on the server, as the picker shows it;
    ValueError with the reason if it is none of these (whether it loads is checked by loading it)."""
    name, problem = _checked_checkpoint(wanted.strip(), "The path")
    if problem:
        raise ValueError(problem)
    return name  # type: ignore[return-value]


def open_model_zip(data: bytes, file_name: str) -> str:
    """Unpack an uploaded zip of an ONNX model (`encoder.onnx`, `decoder.onnx`, `vae.json`, at its top
    or in one folder) under imported_dir() and check it by loading it; the picker's name for it.
    ArchiveError or CheckpointError (the check's own message) if refused, leaving nothing behind."""
    dest = imported_dir() / upload_folder_name(file_name, data)
    if om.is_onnx_folder(dest):
        return shown(dest)  # the same upload, unpacked and checked before
    dest.parent.mkdir(parents=True, exist_ok=True)
    unpacked = unpack_zip(data, dest, MODEL_ZIP)
    try:
        extra = sorted(p.name for p in unpacked.files if p.relative_to(dest).as_posix() not in MODEL_FILES)
        if extra:
            raise ArchiveError(f"The zip holds {extra}; an ONNX model is {', '.join(om.FILES)} only")
        load_checkpoint(dest)
    except (ArchiveError, CheckpointError, OSError):
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return shown(dest)


def unpack_images_zip(data: bytes, file_name: str) -> Unpacked:
    """Unpack an uploaded zip of images (`<class>/*.png`, ..., or flat, at its top or in one folder)
    under uploads_dir(): image endings only, other entries skipped and listed; ArchiveError if refused
    or if it holds no image."""
    dest = uploads_dir() / upload_folder_name(file_name, data)
    if dest.is_dir():
        return Unpacked(dest, tuple(p for p in dest.rglob("*") if p.is_file()), ())  # unpacked before
    dest.parent.mkdir(parents=True, exist_ok=True)
    unpacked = unpack_zip(data, dest, IMAGE_ZIP)
    if not unpacked.files:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(
            f"The zip {file_name!r} holds no images (files ending in {', '.join(IMAGE_SUFFIXES)}); "
            f"{len(unpacked.skipped)} other entries were skipped"
        )
    return unpacked
