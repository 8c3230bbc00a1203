"""Datasets by name, read from IDX files into one uint8 tensor, and batches sliced from it.

Where the files come from, in order: `data_dir` if given; otherwise `$VAE_DATA_DIR/<name>`, the
project's `data/<name>`, torchvision's layout under `data/`, and Debian's package folders; otherwise
torchvision downloads them (checksummed) into `data/`. Everything else reads IDX files directly.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DIGITS = tuple(str(d) for d in range(10))
FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


DATASETS = {
    "mnist": DatasetInfo("MNIST", DIGITS),
    "fashion-mnist": DatasetInfo("FashionMNIST", FASHION, ("/usr/share/datasets/fashion-mnist",)),
    "kmnist": DatasetInfo("KMNIST", KMNIST),
}
FOLDER = "folder"  # a user's folder of images, imported by vae_core.folder
# Colour sets read only through torchvision's class: their files are pickles, which we never open
# ourselves; torchvision checks each file's MD5 against its own list before unpickling it.
TORCHVISION_SETS = {"cifar10": "CIFAR10"}
SPLITS = {"train": "train", "test": "t10k"}
BINARIZE = ("dynamic", "none")


class DatasetError(RuntimeError):
    """A dataset that is missing, unreadable or unknown; the message says how to provide it."""


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset: images (N, C, H, W) uint8 and labels (N,) int64.

    `class_names` names the labels of a set not in DATASETS (an imported folder); otherwise the
    names come from DATASETS by `name`.
    """

    name: str
    split: str
    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...] | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_names if self.class_names is not None else DATASETS[self.name].classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageSet:
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): a big-endian header, then the array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"Cannot read {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: header says {shape}, found {data.size} bytes")
    return data.reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in folder, as named by the official sites, Kaggle or torchvision."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in (".gz", ""):
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    return None


def _split_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = SPLITS[split]
    images = _find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images and labels else None


def data_root() -> Path:
    """Where datasets are looked for and downloaded to: $VAE_DATA_DIR, else the project's data/."""
    return Path(os.environ.get("VAE_DATA_DIR") or PROJECT_ROOT / "data")


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for a dataset's IDX files, in order."""
    if data_dir is not None:
        base = [Path(data_dir)]
    else:
        base = [data_root() / name, *map(Path, DATASETS[name].system_dirs)]
    raw = DATASETS[name].torchvision_class + "/raw"
    root = data_root() if data_dir is None else Path(data_dir)
    return [*base, *(b / "raw" for b in base), root / raw]


def _download(name: str, split: str) -> None:
    """Fetch a split through torchvision (checksummed); it lands in data_root()/<Class>/raw."""
    from torchvision import datasets  # imported late: slow, and only needed to download

    cls = getattr(datasets, DATASETS[name].torchvision_class)
    cls(root=str(data_root()), train=split == "train", download=True)


def _missing_message(name: str, split: str, searched: list[Path], reason: str) -> str:
    return (
        f"The {name} {split} split was not found and could not be downloaded ({reason}).\n"
        f"Searched: {', '.join(str(p) for p in searched)}.\n"
        f"Provide it with --data-dir DIR (a folder holding {SPLITS[split]}-images-idx3-ubyte.gz and "
        f"{SPLITS[split]}-labels-idx1-ubyte.gz, gzipped or not), set VAE_DATA_DIR, or connect to the "
        f"internet so torchvision can download it into {data_root()}."
    )


def locate(name: str, split: str, data_dir: str | Path | None = None) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of a split, or None when no searched folder has them."""
    for folder in candidate_dirs(name, data_dir):
        if found := _split_files(folder, split):
            return found
    return None


def load_images(
    name: str, split: str = "train", data_dir: str | Path | None = None, *, download: bool = True, **folder
) -> ImageSet:
    """Load one split of a dataset by name (`mnist`, `fashion-mnist`, `kmnist`, `cifar10`, or `folder`).

    `folder` with `data_dir` a folder of images: `**folder` takes the options of
    `vae_core.folder.import_folder` (image_size, channels, test_fraction, seed, cache_dir, progress).
    """
    if name == FOLDER:
        from vae_core.folder import load_folder_split  # imported late: it imports this module

        return load_folder_split(data_dir, split, **folder)
    if folder:
        raise ValueError(f"{', '.join(sorted(folder))}: options of the {FOLDER!r} dataset only, not {name!r}")
    if name not in DATASETS and name not in TORCHVISION_SETS:
        known = ", ".join([*DATASETS, *TORCHVISION_SETS])
        raise DatasetError(f"Unknown dataset {name!r}; choose one of {known} or {FOLDER!r}")
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; choose 'train' or 'test'")
    if name in TORCHVISION_SETS:
        return _load_torchvision(name, split, data_dir, download)
    files = locate(name, split, data_dir)
    if files is None and data_dir is None and download:
        try:
            _download(name, split)
        except Exception as e:  # no network, a failed checksum, a read-only disk: all mean "missing"
            raise DatasetError(
                _missing_message(name, split, candidate_dirs(name), f"{type(e).__name__}: {e}")
            ) from e
        files = locate(name, split)
    if files is None:
        reason = "no download from an explicit --data-dir" if data_dir else "download disabled"
        raise DatasetError(_missing_message(name, split, candidate_dirs(name, data_dir), reason))
    images, labels = (read_idx(f) for f in files)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(f"{files[0]} and {files[1]} do not hold matching images and labels")
    return ImageSet(
        name, split, torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def _load_torchvision(name: str, split: str, data_dir: str | Path | None, download: bool) -> ImageSet:
    """A split of a torchvision colour set, (N, 3, H, W) uint8, downloaded (checksummed) when missing."""
    from torchvision import datasets  # imported late: slow, and only needed here

    root = Path(data_dir) if data_dir is not None else data_root()
    cls = getattr(datasets, TORCHVISION_SETS[name])
    try:
        found = cls(root=str(root), train=split == "train", download=download and data_dir is None)
    except Exception as e:  # missing, failed checksum, no network: torchvision raises several types
        raise DatasetError(
            f"The {name} {split} split was not found in {root} or could not be downloaded "
            f"({type(e).__name__}: {e}). Connect to the internet so torchvision can download it into "
            f"{data_root()}, or pass --data-dir DIR holding torchvision's {name} files."
        ) from e
    images = torch.from_numpy(np.ascontiguousarray(found.data.transpose(0, 3, 1, 2)))  # (N, 3, H, W)
    labels = torch.tensor(found.targets, dtype=torch.int64)
    return ImageSet(name, split, images, labels, tuple(found.classes))


def to_float(images: Tensor, binarize: str = "none", generator: torch.Generator | None = None) -> Tensor:
    """uint8 images -> float in [0, 1]; `dynamic` samples each pixel as Bernoulli(intensity / 255)."""
    if binarize == "dynamic":
        return sample_pixels(images, generator)
    if binarize != "none":
        raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
    return images.float().div_(255)


def sample_pixels(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary float images with P(pixel = 1) = intensity / 255 exactly, each pixel independent.

    With u uniform on {0, ..., 254}, P(u < v) = v / 255. The comparison writes floats directly,
    skipping a bool tensor, and the bytes are drawn in bulk rather than by a `torch.randint` draw per
    pixel: both make a training batch cheaper (`bench/step_speed.py` times whole steps).
    """
    u = _bytes_below_255(images.numel(), images.device, generator)
    x = torch.empty(images.shape, device=images.device)
    return torch.lt(u.view(images.shape), images, out=x)


def _bytes_below_255(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """n independent bytes, each uniform on {0, ..., 254}: (n,) uint8.

    The bytes come eight at a time from full-range 64-bit draws, much cheaper than a `torch.randint`
    draw per byte. A word holding a byte 255 (3% of them) is dropped whole: the words kept are
    uniform on {0, ..., 254}^8, since the condition is one on each byte, and keeping the first ones
    in draw order does not depend on their values. 6% spare words almost always make one draw
    enough; the loop covers the rest. One `masked_select` pass costs less than redrawing dropped
    words in place.
    """
    if device.type not in ("cpu", "cuda"):  # full-range 64-bit draws are a CPU and CUDA kernel
        return torch.randint(0, 255, (n,), dtype=torch.uint8, device=device, generator=generator)
    needed = -(-n // 8)
    kept: list[Tensor] = []
    while (missing := needed - sum(len(k) for k in kept)) > 0:
        words = _random_words(missing + missing // 16 + 16, device, generator)
        kept.append(torch.masked_select(words, _holding_255(words) == 0)[:missing])
    words = kept[0] if len(kept) == 1 else torch.cat(kept)
    return words.view(torch.uint8)[:n]


def _random_words(m: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """m 64-bit words with every bit uniform: (m,) int64."""
    words = torch.empty(m, dtype=torch.int64, device=device)
    return words.random_(-(2**63), None, generator=generator)


def _holding_255(words: Tensor) -> Tensor:
    """(m,) int64 -> (m,) int64, nonzero where the word holds a byte 255 (eight 0/1 flags, viewed
    as a word: 8x fewer elements to test than the bytes)."""
    flags = torch.eq(words.view(torch.uint8), 255, out=torch.empty_like(words).view(torch.uint8))
    return flags.view(torch.int64)


def fixed_binarization(images: Tensor, seed: int = 0) -> Tensor:
    """The evaluation protocol for dynamically binarised models: one binarisation, fixed seed.

    It draws u uniform on {0, ..., 254} with `torch.randint` and keeps u < v, as when the shipped
    checkpoints were measured, so that their metrics reproduce; `sample_pixels` has the same law.
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    u = torch.randint(0, 255, images.shape, dtype=torch.uint8, device=images.device, generator=generator)
    return (u < images).float()
