"""Datasets by name, read from IDX files into one uint8 tensor, and batches sliced from it.

Where the files come from, in order: `data_dir` if given; otherwise `$VAE_DATA_DIR/<name>`, the
project's `data/<name>`, torchvision's layout under `data/`, and Debian's package folders; otherwise
torchvision downloads them (checksummed) into `data/`. Everything else reads IDX files directly.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

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
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py"}  # what torchvision unpacks under its root
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


IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these datasets use
IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
             0x0D: "32-bit floats", 0x0E: "64-bit floats"}  # fmt: skip
IDX_IMAGE_SHAPE = (28, 28)  # every IDX dataset here is MNIST-like: 28 x 28 grey images
MAX_IDX_DIMS = 4
MAX_IDX_BYTES = 2**30  # 20x MNIST's training images: a header declaring more is refused unread
IDX_CHUNK = 2**24  # bytes read at a time, so a header declaring more than the file holds costs nothing


def _shown_shape(shape: tuple[int | None, ...]) -> str:
    """(None, 28, 28) -> '(N, 28, 28)'."""
    return (
        "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    )


def _idx_shape(f: BinaryIO, path: Path) -> tuple[int, ...]:
    """Read and check an IDX header (magic 0 0 TYPE NDIM, then NDIM big-endian sizes): the shape."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0":
        raise DatasetError(f"{path} is not an IDX file: it does not start with the IDX magic bytes 00 00")
    if magic[2] != IDX_UBYTE:
        held = IDX_TYPES.get(magic[2], f"an unknown type 0x{magic[2]:02x}")
        raise DatasetError(
            f"{path} is an IDX file of {held}; expected unsigned bytes (type 0x08), as MNIST's"
        )
    if not 1 <= magic[3] <= MAX_IDX_DIMS:
        raise DatasetError(
            f"{path} declares {magic[3]} dimensions; an IDX file of images has 3 and one of labels 1"
        )
    sizes = f.read(4 * magic[3])
    if len(sizes) < 4 * magic[3]:
        raise DatasetError(f"{path} is truncated: it ends inside its header")
    return tuple(int.from_bytes(sizes[i : i + 4], "big") for i in range(0, len(sizes), 4))


def read_idx(path: Path, expected: tuple[int | None, ...] | None = None, what: str = "") -> np.ndarray:
    """Read an IDX file of unsigned bytes (optionally gzipped): a big-endian header, then the array.

    `expected` is the shape it must have, None for a size that may be anything (e.g. (None, 28, 28));
    `what` says what the file should hold, for the messages. The header is checked before the data
    is read, so a file declaring more than it holds (or more than MAX_IDX_BYTES) costs no memory."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            shape = _idx_shape(f, path)
            _check_shape(path, shape, expected, what)
            size = math.prod(shape)
            if size > MAX_IDX_BYTES:
                raise DatasetError(
                    f"{path} declares shape {shape}, {size:,} bytes of data, more than the {MAX_IDX_BYTES:,} "
                    f"an IDX file may hold here: it is damaged or not a dataset"
                )
            raw = _read_up_to(f, size + 1)  # one byte more than declared tells an oversized file
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"Cannot read {path}: {str(e) or type(e).__name__}") from e
    if len(raw) < size:
        raise DatasetError(
            f"{path} is truncated: its header declares shape {shape}, {size:,} bytes of data, but it holds "
            f"{len(raw):,}"
        )
    if len(raw) > size:
        raise DatasetError(
            f"{path} holds more data than its header declares (shape {shape}, {size:,} bytes): it is "
            f"damaged, or its header is wrong"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _read_up_to(f: BinaryIO, n: int) -> bytearray:
    """At most n bytes, read in chunks: memory grows with the bytes there are, not with n."""
    data = bytearray()
    while len(data) < n and (chunk := f.read(min(IDX_CHUNK, n - len(data)))):
        data += chunk
    return data


def _check_shape(
    path: Path, shape: tuple[int, ...], expected: tuple[int | None, ...] | None, what: str
) -> None:
    if expected is None:
        return
    fits = len(shape) == len(expected) and all(
        e is None or e == d for d, e in zip(shape, expected, strict=False)
    )
    if not fits:
        raise DatasetError(
            f"{path} holds an array of shape {shape}; expected {_shown_shape(expected)}"
            + (f" for {what}" if what else "")
        )


def _check_labels(path: Path, labels: np.ndarray, classes: tuple[str, ...], name: str) -> None:
    """Every label names one of the dataset's classes: 0 to len(classes) - 1."""
    if labels.size and int(labels.max()) >= len(classes):
        index = int(labels.argmax())
        raise DatasetError(
            f"{path} holds label {int(labels[index])} (for image {index}); {name} has {len(classes)} "
            f"classes, labelled 0 to {len(classes) - 1}"
        )


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


def _not_downloaded(name: str, split: str, reason: str) -> str:
    return f"The {name} {split} split was not found and could not be downloaded ({reason})."


def _missing_message(name: str, split: str, searched: list[Path], head: str) -> str:
    """`head`, then where the split was looked for and how to provide it."""
    return (
        f"{head}\n"
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


def available(name: str, data_dir: str | Path | None = None) -> tuple[bool, str]:
    """Whether both splits of a dataset are on this machine (nothing is downloaded), and if not, a
    message saying where they were looked for and how to provide them."""
    if name == FOLDER:
        if data_dir is None or not Path(data_dir).is_dir():
            return False, (
                "The folder dataset is a folder of your images: give it as the data folder "
                f"(--data-dir DIR), holding DIR/<class>/*.png, *.jpg, ...; got {data_dir!r}."
            )
        return True, ""  # what it holds is checked, file by file, when it is imported
    if name in TORCHVISION_SETS:
        root = Path(data_dir) if data_dir is not None else data_root()
        if not _torchvision_files_present(name, root):
            return False, (
                f"The {name} files are not in {root}: connect to the internet so torchvision can "
                f"download them (checksummed), or pass --data-dir DIR holding torchvision's {name} files."
            )
        return True, ""
    if name not in DATASETS:
        known = ", ".join([*DATASETS, *TORCHVISION_SETS, FOLDER])
        return False, f"Unknown dataset {name!r}; choose one of {known}"
    for split in SPLITS:
        if locate(name, split, data_dir) is None:
            where = f"in {data_dir}" if data_dir else "on this machine: it has not been downloaded yet"
            head = f"The {name} {split} split is not {where}."
            return False, _missing_message(name, split, candidate_dirs(name, data_dir), head)
    return True, ""


def _torchvision_files_present(name: str, root: Path) -> bool:
    """Whether torchvision's own folder for a dataset exists under root (its checksums are checked
    when it is loaded, not here)."""
    return (root / TORCHVISION_FOLDERS[name]).is_dir()


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
            head = _not_downloaded(name, split, f"{type(e).__name__}: {e}")
            raise DatasetError(_missing_message(name, split, candidate_dirs(name), head)) from e
        files = locate(name, split)
    if files is None:
        reason = "no download from an explicit --data-dir" if data_dir else "download disabled"
        searched = candidate_dirs(name, data_dir)
        raise DatasetError(_missing_message(name, split, searched, _not_downloaded(name, split, reason)))
    h, w = IDX_IMAGE_SHAPE
    images = read_idx(files[0], (None, h, w), f"the images of a {name} split ({h} x {w} grey images)")
    labels = read_idx(files[1], (None,), f"the labels of a {name} split (one number per image)")
    if len(labels) != len(images):
        raise DatasetError(
            f"{files[0]} holds {len(images):,} images but {files[1]} holds {len(labels):,} labels; a split "
            f"has one label per image"
        )
    _check_labels(files[1], labels, DATASETS[name].classes, name)
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
