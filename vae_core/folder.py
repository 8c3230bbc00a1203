"""A user's folder of images, imported once into a cached uint8 array and split into ImageSets.

Owns: the folder layouts, the safe decoding of each untrusted file (the file-size and pixel limits
of preprocess.py, whose `fit_picture` is the transform to C x S x S), the cache of decoded images,
the train/test split and the import report.

Layouts (file names ending in .png .jpg .jpeg .webp .bmp .gif .tif .tiff, any case; names starting
with "." and `__MACOSX` folders are ignored, as are files with other endings):
- `DIR/train/...` and `DIR/test/...`: the folder's own split; each half is read as below.
- `DIR/<class>/**/<image>`: the subfolder names, sorted, are the class names; an image's label is
  its class's index. Images directly in DIR beside class folders are skipped (listed as such).
- `DIR/<image>` with no subfolders: unlabelled; one class, UNLABELLED, and every label is 0.
Without train/ and test/ the split is drawn: per class, round(test_fraction * n) images (at least
one when the class has two or more, never all of them) go to the test set, those first in the
order of a seeded hash of their relative paths. The same seed gives the same split, and adding a
file moves few others.

Each image: the first frame (of an animated GIF or WebP, or a multi-page TIFF; noted in the
report), then `vae_core.preprocess.fit_picture`, the transform the Encode page applies to an upload
too: the EXIF orientation applied; transparency composited on white; converted to grey ("L",
1 channel) or RGB (3 channels); the short side resized to S with LANCZOS (JPEGs first decoded at
the smallest DCT scale still at least S, as Pillow's `draft` offers), then centre-cropped to S x S.

Every file that cannot be imported (empty, too large, unreadable, not an image, a decompression
bomb by its header, corrupt or truncated, a symlink leaving the folder) is skipped and listed in
the report with its reason; it never stops the import. Only a folder with nothing to import raises.

The cache: one .npy of uint8 (N, C, S, S) and one JSON record (files, labels, classes, report) per
folder, named by a fingerprint of the folder's listing (relative paths, sizes, modification times)
and the transform (S, C) under `cache_dir` (default `$VAE_CACHE_DIR/folders`, else the project's
`.cache/folders`); a changed folder or transform imports again and replaces the older entry of the
same folder and transform. The decoding pass holds one image and a small write buffer at a time
and writes through plain file writes (dirty pages of a writable memory map would count in the
process's resident memory until the whole array is written); reads memory-map the .npy. Nothing is
ever written inside the user's folder.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vae_core.atomic import DiskFullError, atomic_write_text, temporary_beside
from vae_core.data import PROJECT_ROOT, DatasetError, ImageSet
from vae_core.preprocess import MAX_FILE_BYTES, MAX_PIXELS, MODES, _describe, fit_picture

__all__ = [
    "FolderImport",
    "ImportReport",
    "SkippedFile",
    "cache_folder",
    "decode_file",
    "default_cache_dir",
    "import_folder",
    "load_folder_split",
    "tqdm_progress",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # no other decoder sees the bytes
MIN_SIDE, MAX_SIDE = 16, 128
SPLITS = ("train", "test")
UNLABELLED = "all"
FORMAT_VERSION = 1
LISTED = 10  # skipped files named in summary(); the rest are counted
WRITE_ROWS = 256  # images buffered between two writes of the cache file
COPY_BYTES = 1 << 24
Progress = Callable[[int, int], object]


class SkippedFile(ValueError):
    """One file that cannot be imported; the message is the reason shown in the report."""


@dataclass(frozen=True)
class ImportReport:
    """What an import found: every file with an image ending is either imported or skipped."""

    root: str
    n_found: int
    n_imported: int
    class_counts: dict[str, int]  # imported images per class, in label order
    skipped: tuple[tuple[str, str], ...]  # (path relative to root, reason)
    notes: tuple[tuple[str, str], ...]  # (path relative to root, note), e.g. an animation's first frame
    n_ignored: int = 0  # files with other endings
    seconds: float = 0.0  # wall time of the decoding pass
    from_cache: bool = False

    def summary(self, listed: int = LISTED) -> str:
        """A few lines for the terminal: counts, classes, skipped files (the first `listed`), notes."""
        how = "read from the cache" if self.from_cache else f"in {self.seconds:.1f} s"
        lines = [f"Imported {self.n_imported} of {self.n_found} images from {self.root} ({how})."]
        lines.append("Classes: " + ", ".join(f"{c} {n}" for c, n in self.class_counts.items()))
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)}:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:listed]]
            if len(self.skipped) > listed:
                lines.append(f"  and {len(self.skipped) - listed} more")
        if self.notes:
            kinds = Counter(note for _, note in self.notes)
            lines.append("Notes: " + "; ".join(f"{n} x {note}" for note, n in kinds.items()))
        if self.n_ignored:
            lines.append(f"Ignored {self.n_ignored} files without an image ending.")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> ImportReport:
        pairs = {k: tuple(map(tuple, d[k])) for k in ("skipped", "notes")}
        return cls(**{**d, **pairs})


@dataclass(frozen=True)
class FolderImport:
    """An imported folder: the two splits (uint8 (N, C, S, S) images), the report, the cache file."""

    train: ImageSet
    test: ImageSet
    report: ImportReport
    cache_file: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


@dataclass(frozen=True)
class _Entry:
    """One file to decode: its path relative to the root, class name, and split when the layout has one."""

    rel: str
    cls: str
    split: str | None


@dataclass(frozen=True)
class _Listing:
    root: Path
    entries: tuple[_Entry, ...]
    skipped: tuple[tuple[str, str], ...]  # found while listing: symlinks leaving, stray images
    notes: tuple[tuple[str, str], ...]
    n_ignored: int
    stats: tuple[tuple[int, int], ...]  # (size, mtime_ns) per entry, for the fingerprint


# ---------------------------------------------------------------------------------------------------
# The public calls


def import_folder(
    root: str | Path,
    *,
    image_size: int = 64,
    channels: int = 3,
    test_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> FolderImport:
    """Import `root` (decoding only when the folder or the transform changed) and split it.

    `progress(done, total)` is called after each decoded file, only while decoding. Raises
    DatasetError when `root` is not a folder or holds nothing to import, ValueError for bad options.
    """
    _check_options(image_size, channels, test_fraction)
    npy, record = _cached(Path(root), image_size, channels, cache_dir, progress)
    images = np.load(npy, mmap_mode="r")  # (N, C, S, S) uint8, paged in on demand
    labels = np.asarray(record["labels"], dtype=np.int64)
    in_test = _in_test(record, labels, test_fraction, seed)
    classes = tuple(record["classes"])
    train, test = (
        _image_set(images, labels, mask, split, classes)
        for mask, split in ((~in_test, "train"), (in_test, "test"))
    )
    return FolderImport(train, test, ImportReport.from_dict(record["report"]), npy)


def cache_folder(
    root: str | Path,
    *,
    image_size: int = 64,
    channels: int = 3,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """The cached .npy of `root`'s images (N, C, S, S), decoding them first when it is missing.

    The import's first half alone: it holds one image and a write buffer at a time, whatever N.
    """
    _check_options(image_size, channels, 0.5)
    return _cached(Path(root), image_size, channels, cache_dir, progress)[0]


def _cached(root: Path, image_size: int, channels: int, cache_dir, progress) -> tuple[Path, dict]:
    """The cache file and its record for the folder as it is now, built when missing."""
    listing = _list_folder(root)
    npy = _cache_file(listing, image_size, channels, cache_dir)
    return npy, _read_record(npy) or _build_cache(listing, npy, image_size, channels, progress)


def load_folder_split(root: str | Path | None, split: str, **options) -> ImageSet:
    """One split of an imported folder, for `load_images("folder", split, data_dir=root, ...)`.

    `options`: those of `import_folder` (image_size, channels, test_fraction, seed, cache_dir,
    progress). A second call for the other split finds the cache and decodes nothing.
    """
    if root is None:
        raise DatasetError("The folder dataset needs a folder of images: pass --data-dir DIR.")
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; choose 'train' or 'test'")
    return getattr(import_folder(root, **options), split)


def tqdm_progress(desc: str = "Importing images") -> Progress:
    """A `progress` callback that drives a tqdm bar, opened on the first call and closed at the end."""
    from tqdm.auto import tqdm  # imported late: only the terminal needs it

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def default_cache_dir() -> Path:
    """$VAE_CACHE_DIR/folders, else the project's .cache/folders (git-ignored)."""
    return Path(os.environ.get("VAE_CACHE_DIR") or PROJECT_ROOT / ".cache") / "folders"


def _check_options(image_size: int, channels: int, test_fraction: float) -> None:
    if not isinstance(image_size, int) or not MIN_SIDE <= image_size <= MAX_SIDE:
        raise ValueError(f"image_size must be an integer from {MIN_SIDE} to {MAX_SIDE}, got {image_size!r}")
    if channels not in MODES:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")


# ---------------------------------------------------------------------------------------------------
# Decoding one file


def decode_file(path: Path, image_size: int, channels: int) -> tuple[np.ndarray, str | None]:
    """One file as (C, S, S) uint8 and a note (e.g. "animated: first frame used") or None.

    Raises SkippedFile, and nothing else, for any file that cannot be imported.
    """
    with warnings.catch_warnings():  # Pillow warns on odd metadata; our own limits decide instead
        warnings.simplefilter("ignore")
        img = _open(_read(path))
        try:
            note = _frame_note(img)
            pixels = fit_picture(img, image_size, channels)  # (C, S, S), as an upload to Encode
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
            raise SkippedFile(f"cannot decode: corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    return pixels, note


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise SkippedFile(
                    f"larger than the {MAX_FILE_BYTES / 1e6:.0f} MB limit ({size / 1e6:.1f} MB)"
                )
            raw = f.read(MAX_FILE_BYTES + 1)
    except PermissionError as exc:
        raise SkippedFile("unreadable: permission denied") from exc
    except OSError as exc:
        raise SkippedFile(f"unreadable: {exc.strerror or exc}") from exc
    if not raw:
        raise SkippedFile("empty file (0 bytes)")
    return raw


def _open(raw: bytes) -> Image.Image:
    """The image with only its header read, after the pixel-count check."""
    limit = f"the {MAX_PIXELS / 1e6:.0f}-megapixel limit (a decompression-bomb guard)"
    try:
        img = Image.open(io.BytesIO(raw), formats=_formats())
    except Image.DecompressionBombError as exc:
        raise SkippedFile(f"its header claims more pixels than {limit}") from exc
    except UnidentifiedImageError as exc:
        raise SkippedFile(f"not an image: the data looks like {_describe(raw)}") from exc
    except Exception as exc:  # Pillow's header parsers raise many types on malformed input
        raise SkippedFile(f"corrupt header ({type(exc).__name__}: {exc})") from exc
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise SkippedFile(f"its header claims {width} x {height} pixels, over {limit}")
    if width * height == 0:
        raise SkippedFile(f"empty image ({width} x {height} pixels)")
    return img


@functools.cache
def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in PILLOW_FORMATS if name in Image.OPEN)


def _frame_note(img: Image.Image) -> str | None:
    frames = getattr(img, "n_frames", 1)
    return f"{img.format} with {frames} frames: first frame used" if frames > 1 else None


# ---------------------------------------------------------------------------------------------------
# Listing the folder


def _list_folder(root: Path) -> _Listing:
    """Every file to decode in `root`, with what was skipped or noted while listing."""
    root = _checked_root(root)
    halves = [root / s for s in SPLITS]
    tops = list(zip(halves, SPLITS, strict=True)) if all(h.is_dir() for h in halves) else [(root, None)]
    entries, skipped, notes, n_ignored = [], [], [], 0
    for top, split in tops:
        found = _scan(root, top, split)
        entries += found.entries
        skipped += found.skipped
        notes += found.notes
        n_ignored += found.n_ignored
    entries, stats, unreadable = _stat_all(root, entries)
    if not entries:
        raise DatasetError(_nothing_to_import(root, skipped + unreadable))
    if tops[0][1] and not all(any(e.split == s for e in entries) for s in SPLITS):
        raise DatasetError(
            f"{root} has train/ and test/ folders, but one holds no image files; put images in both."
        )
    return _Listing(root, tuple(entries), tuple(skipped + unreadable), tuple(notes), n_ignored, tuple(stats))


def _checked_root(root: Path) -> Path:
    expected = "a folder of images (DIR/<class>/<image>, or images directly in DIR)"
    if not root.exists():
        raise DatasetError(f"{root} does not exist; expected {expected}.")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; expected {expected}.")
    return root.resolve()


def _scan(root: Path, top: Path, split: str | None) -> _Listing:
    """The files under `top`, labelled by class folder (or UNLABELLED when top has no subfolders)."""
    files, skipped, notes = _walk(root, top)
    classes = [
        p.name for p in sorted(top.iterdir()) if p.is_dir() and not p.is_symlink() and not _hidden(p.name)
    ]
    entries, n_ignored = [], 0
    for rel in files:
        parts = (root / rel).relative_to(top).parts
        if not rel.lower().endswith(IMAGE_SUFFIXES):
            n_ignored += 1
        elif len(parts) > 1:
            entries.append(_Entry(rel, parts[0], split))
        elif classes:
            skipped.append((rel, "outside any class folder (beside " + ", ".join(classes[:3]) + ")"))
        else:
            entries.append(_Entry(rel, UNLABELLED, split))
    used = {e.cls for e in entries}
    notes += [(_rel(root, top / c) + "/", "holds no images: not a class") for c in classes if c not in used]
    return _Listing(root, tuple(entries), tuple(skipped), tuple(notes), n_ignored, ())


def _walk(root: Path, top: Path) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The files under `top` (paths relative to root, sorted), those skipped, and notes on folders."""
    files, skipped, notes = [], [], []

    def unreadable(exc: OSError) -> None:
        notes.append((_rel(root, Path(exc.filename)) + "/", f"an unreadable folder: {exc.strerror}"))

    for here, dirs, names in os.walk(top, onerror=unreadable):  # does not follow symlinked folders
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for d in [d for d in dirs if Path(here, d).is_symlink()]:
            dirs.remove(d)
            notes.append((_rel(root, Path(here, d)) + "/", "a symlinked folder: not followed"))
        for name in sorted(n for n in names if not _hidden(n)):
            path = Path(here, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                skipped.append((_rel(root, path), "a symlink to a file outside the folder"))
            else:
                files.append(_rel(root, path))
    return files, skipped, notes


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _stat_all(root: Path, entries: list[_Entry]) -> tuple[list[_Entry], list, list[tuple[str, str]]]:
    """Entries whose size and modification time can be read, their (size, mtime_ns), the others."""
    kept, stats, unreadable = [], [], []
    for entry in entries:
        try:
            st = os.stat(root / entry.rel)  # a symlink's target
        except OSError as exc:
            unreadable.append((entry.rel, f"unreadable: {exc.strerror or exc}"))
            continue
        kept.append(entry)
        stats.append((st.st_size, st.st_mtime_ns))
    return kept, stats, unreadable


def _nothing_to_import(root: Path, skipped: list[tuple[str, str]]) -> str:
    subfolders = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not _hidden(p.name)]
    endings = " ".join(IMAGE_SUFFIXES)
    if subfolders and not skipped:
        shown = ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        return (
            f"The subfolders of {root} ({shown}) hold no image files ({endings}); expected "
            f"DIR/<class>/<image>, one subfolder of images per class."
        )
    why = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    return (
        f"{root} holds no image files to import{why}; expected images ({endings}) in "
        f"DIR/<class>/ subfolders, or directly in DIR for unlabelled data."
    )


# ---------------------------------------------------------------------------------------------------
# The cache


def _cache_file(listing: _Listing, image_size: int, channels: int, cache_dir: str | Path | None) -> Path:
    """cache_dir/<folder name>-<hash of its path>/s<S>c<C>-<fingerprint>.npy, refused inside the folder."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if base.resolve().is_relative_to(listing.root):
        raise ValueError(
            f"The cache folder {base} is inside the imported folder {listing.root}; nothing is written "
            "there. Choose a cache_dir (or $VAE_CACHE_DIR) outside it."
        )
    place = hashlib.sha256(str(listing.root).encode()).hexdigest()[:12]
    return (
        base
        / f"{listing.root.name}-{place}"
        / f"s{image_size}c{channels}-{_fingerprint(listing, image_size, channels)}.npy"
    )


def _fingerprint(listing: _Listing, image_size: int, channels: int) -> str:
    """A hash of the listing (paths, classes, splits, sizes, mtimes, skips) and the transform."""
    files = [[e.rel, e.cls, e.split, *st] for e, st in zip(listing.entries, listing.stats, strict=True)]
    key = {"version": FORMAT_VERSION, "size": image_size, "channels": channels, "files": files}
    key["skipped"] = listing.skipped
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]


def _record_file(npy: Path) -> Path:
    return npy.with_suffix(".json")


def _read_record(npy: Path) -> dict | None:
    """The cached record beside `npy` (written last: it marks a complete entry), or None."""
    try:
        record = json.loads(_record_file(npy).read_text())
    except (OSError, ValueError):
        return None
    if record.get("format_version") != FORMAT_VERSION or not npy.is_file():
        return None
    record["report"]["from_cache"] = True
    return record


def _build_cache(
    listing: _Listing, npy: Path, image_size: int, channels: int, progress: Progress | None
) -> dict:
    """Decode every entry into `npy` (written whole, then renamed) and write its JSON record."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    kept, skipped, notes = [], list(listing.skipped), list(listing.notes)
    with _RowWriter(npy, len(listing.entries), (channels, image_size, image_size)) as writer:
        for done, entry in enumerate(listing.entries, 1):
            try:
                pixels, note = decode_file(listing.root / entry.rel, image_size, channels)
            except SkippedFile as exc:
                skipped.append((entry.rel, str(exc)))
            else:
                writer.append(pixels)
                kept.append(entry)
                notes += [(entry.rel, note)] if note else []
            if progress is not None:
                progress(done, len(listing.entries))
        if not kept:
            raise DatasetError(_nothing_to_import(listing.root, skipped))
        writer.commit()
    record = _record(listing, kept, skipped, notes, time.perf_counter() - start, (image_size, channels))
    atomic_write_text(_record_file(npy), json.dumps(record))
    _remove_older(npy)
    return record


def _record(
    listing: _Listing,
    kept: list[_Entry],
    skipped: list[tuple[str, str]],
    notes: list[tuple[str, str]],
    seconds: float,
    transform: tuple[int, int],
) -> dict:
    """The JSON record of a cache entry: the imported files in row order, labels, splits, report."""
    classes = sorted({e.cls for e in kept})
    label = {c: i for i, c in enumerate(classes)}
    counts = Counter(e.cls for e in kept)
    report = ImportReport(
        root=str(listing.root),
        n_found=len(kept) + len(skipped),
        n_imported=len(kept),
        class_counts={c: counts[c] for c in classes},
        skipped=tuple(skipped),
        notes=tuple(notes),
        n_ignored=listing.n_ignored,
        seconds=round(seconds, 3),
    )
    return {
        "format_version": FORMAT_VERSION,
        "transform": {"image_size": transform[0], "channels": transform[1]},
        "classes": classes,
        "files": [e.rel for e in kept],
        "labels": [label[e.cls] for e in kept],
        "splits": [e.split for e in kept] if kept[0].split else None,
        "report": asdict(report),
    }


def _remove_older(npy: Path) -> None:
    """Delete this folder's earlier entries for the same transform (an imported folder can be large)."""
    prefix = npy.name.split("-")[0]
    for old in npy.parent.glob(f"{prefix}-*"):
        if old.stem != npy.stem and old.suffix in (".npy", ".json"):
            old.unlink(missing_ok=True)


class _RowWriter:
    """Append (C, S, S) rows to a preallocated .npy under a temporary name; commit renames it.

    At most `capacity` rows; a commit with fewer (files were skipped) copies them to an exact-size
    file first, in COPY_BYTES chunks, so the .npy's header always matches its rows.
    """

    def __init__(self, target: Path, capacity: int, row_shape: tuple[int, ...]):
        self.target, self.row_shape, self.n = target, row_shape, 0
        self.buffer = np.empty((WRITE_ROWS, *row_shape), dtype=np.uint8)  # (B, C, S, S)
        self.path, self.offset = self._allocate(capacity)
        self.file = open(self.path, "r+b")  # noqa: SIM115 (closed in __exit__)
        self.file.seek(self.offset)
        self.temps = [self.path]

    def _allocate(self, rows: int) -> tuple[Path, int]:
        """A new temporary .npy of `rows` rows beside the target, and the offset of its data."""
        fd, name = temporary_beside(self.target)
        os.close(fd)
        array = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=(rows, *self.row_shape))
        offset = array.offset
        del array  # unmapped: the rows go through plain writes
        return Path(name), offset

    def append(self, row: np.ndarray) -> None:
        self.buffer[self.n % WRITE_ROWS] = row
        self.n += 1
        if self.n % WRITE_ROWS == 0:
            self.file.write(self.buffer.data)

    def commit(self) -> None:
        self.file.write(self.buffer[: self.n % WRITE_ROWS].data)
        self.file.close()
        path = self._exact_size() if self.n < self._capacity() else self.path
        os.replace(path, self.target)

    def _capacity(self) -> int:
        return (self.path.stat().st_size - self.offset) // self.buffer[0].nbytes

    def _exact_size(self) -> Path:
        path, offset = self._allocate(self.n)
        self.temps.append(path)
        with open(self.path, "rb") as src, open(path, "r+b") as dst:
            src.seek(self.offset)
            dst.seek(offset)
            for chunk in _chunks(src, self.n * self.buffer[0].nbytes):
                dst.write(chunk)
        return path

    def __enter__(self) -> _RowWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.file.close()
        for path in self.temps:
            path.unlink(missing_ok=True)  # after a commit, the renamed file is no longer there
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"The disk is full: could not write the image cache {self.target}")


def _chunks(f, n_bytes: int) -> Iterator[bytes]:
    while n_bytes > 0 and (chunk := f.read(min(COPY_BYTES, n_bytes))):
        n_bytes -= len(chunk)
        yield chunk


# ---------------------------------------------------------------------------------------------------
# The split


def _in_test(record: dict, labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: the folder's own split when it has one, else a seeded stratified draw."""
    if record["splits"] is not None:
        return np.array([s == "test" for s in record["splits"]], dtype=bool)
    return stratified_split(record["files"], labels, test_fraction, seed)


def stratified_split(files: list[str], labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for test: per class, the `_test_count` files first by a seeded hash of the path."""
    in_test = np.zeros(len(files), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        ranked = sorted(members, key=lambda i: hashlib.blake2b(f"{seed}/{files[i]}".encode()).digest())
        in_test[ranked[: _test_count(len(members), test_fraction)]] = True
    return in_test


def _test_count(n: int, test_fraction: float) -> int:
    """round(test_fraction * n), at least 1 when n >= 2, and always leaving one training image."""
    return 0 if n < 2 else min(n - 1, max(1, round(test_fraction * n)))


def _image_set(images: np.ndarray, labels: np.ndarray, mask: np.ndarray, split: str, classes) -> ImageSet:
    """The masked rows copied out of the memory map: (n, C, S, S) uint8 and (n,) int64 tensors."""
    rows = np.flatnonzero(mask)
    pixels = np.asarray(images[rows])  # fancy indexing copies: the split's bytes, once
    return ImageSet("folder", split, torch.from_numpy(pixels), torch.from_numpy(labels[rows]), classes)
