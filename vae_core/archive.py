"""The one safe zip unpacker: an uploaded archive becomes a fresh folder, or nothing at all.

    unpack_zip(data, dest, limits) -> Unpacked(folder, files, skipped)

Every entry is checked before a byte is written, and refused with an `ArchiveError` naming it:
bytes that are not a zip (or a zip cut short), names that are absolute, hold `..`, a backslash, a
drive letter or characters outside SAFE_NAME (they are refused, never rewritten: a rewritten name
could collide with another), duplicate names, a file where another entry needs a folder, symlinks
and other special files (by the Unix mode in `external_attr`), encrypted entries, unknown
compression methods, more entries than `max_files`, a declared size above `max_entry_bytes` or a
declared total above `max_total_bytes`, and compression ratios above `max_ratio` (a zip bomb).

The header is not trusted: each entry is streamed in CHUNK_BYTES pieces through a byte counter
that stops at the entry's declared size, at the total limit and at the ratio limit, whatever the
header said, so memory stays at one chunk and disk at the limit. Entries with other endings than
`allowed_suffixes`, and hidden ones (a part starting with "." or `__MACOSX`, as macOS adds), are
skipped and listed. With `strip_top`, one top folder holding every entry is dropped (a zip of
`DIR/` unpacks as DIR's contents).

The files go to a fresh temporary folder beside `dest`, which is renamed to `dest` once every
entry is written; on any failure it is removed, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveError", "Limits", "Unpacked", "unpack_zip"]

CHUNK_BYTES = 1 << 20  # streamed per read: the unpacker's memory, whatever an entry's size
MAX_PART_CHARS = 255  # characters of one folder or file name (the usual file system limit)
MAX_DEPTH = 16  # folders an entry may be nested in
RATIO_FLOOR = 1 << 20  # entries smaller than this are never refused for their ratio
ENCRYPTED = 0x1  # general purpose flag bit of an encrypted entry
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}  # what zip tools write
HIDDEN = "__MACOSX"  # the resource-fork folder macOS puts in every zip it makes
# A name part: letters and digits of any script, then those, spaces and common punctuation.
SAFE_NAME = re.compile(r"[^\W_][\w .,&+'()@#=~-]*")
SAFE_CHARS = "letters, digits, spaces and . , & + ' ( ) @ # = ~ - _ (starting with a letter or digit)"


class ArchiveError(ValueError):
    """A zip that is refused; the message names the entry (or the limit) and what to do."""


@dataclass(frozen=True)
class Limits:
    """What one upload may hold: entries, bytes (each and in all), compression ratio, endings."""

    max_files: int
    max_total_bytes: int
    max_entry_bytes: int | None = None  # default: max_total_bytes
    max_ratio: int = 200  # uncompressed / compressed bytes; deflate reaches ~1000 on zeros
    allowed_suffixes: tuple[str, ...] | None = None  # lower case with the dot; None: every ending
    strip_top: bool = False

    @property
    def entry_bytes(self) -> int:
        return self.max_total_bytes if self.max_entry_bytes is None else self.max_entry_bytes


@dataclass(frozen=True)
class Unpacked:
    """An unpacked zip: its folder, the files written there, and the entries skipped (name, why)."""

    folder: Path
    files: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    target: PurePosixPath  # relative to the unpacked folder


def unpack_zip(data: bytes, dest: str | Path, limits: Limits) -> Unpacked:
    """Unpack `data` into the new folder `dest` (its parent must exist, `dest` must not), or raise
    ArchiveError and leave nothing; OSError (e.g. DiskFullError) on disk trouble, also leaving nothing."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(f"{dest} already exists: unpack into a new folder")
    with _open(data) as archive:
        entries, skipped = _plan(archive.infolist(), limits)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
        try:
            _write_all(archive, entries, tmp, limits)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Unpacked(dest, tuple(dest / e.target for e in entries), tuple(skipped))


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise ArchiveError(
            f"The upload ({len(data):,} bytes) is not a readable zip file: it is damaged, truncated (an "
            f"upload or a copy that stopped early) or of another format ({e})"
        ) from e


# ---------------------------------------------------------------- checking the entries


def _plan(infos: list[zipfile.ZipInfo], limits: Limits) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """The entries to write and those skipped, every header checked; ArchiveError on the first refused."""
    if len(infos) > limits.max_files:
        raise ArchiveError(f"The zip holds {len(infos):,} entries; at most {limits.max_files:,} are accepted")
    entries, skipped = [], []
    for info in infos:
        parts = _check_name(info)
        if info.is_dir():
            continue  # folders are made for the files inside them
        _check_kind(info)
        if any(p.startswith(".") or p == HIDDEN for p in parts):
            skipped.append((info.filename, "hidden (a name starting with '.' or a __MACOSX folder)"))
            continue
        suffix = PurePosixPath(parts[-1]).suffix.lower()
        if limits.allowed_suffixes is not None and suffix not in limits.allowed_suffixes:
            skipped.append((info.filename, f"not one of {', '.join(limits.allowed_suffixes)}"))
            continue
        _check_declared_size(info, limits)
        entries.append(_Entry(info, PurePosixPath(*parts)))
    entries = _stripped(entries) if limits.strip_top else entries
    _check_unique(entries)
    _check_declared_total(entries, limits)
    return entries, skipped


def _check_name(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's name as path parts, each a SAFE_NAME; ArchiveError naming what is wrong."""
    raw = info.orig_filename  # zipfile cuts names at a NUL byte; the original keeps it
    shown = repr(raw)
    raw = unicodedata.normalize("NFC", raw)  # macOS writes "é" as "e" + a combining accent
    if "\\" in raw:
        raise ArchiveError(f"The zip entry {shown} has a backslash: a Windows path, refused")
    if raw.startswith("/"):
        raise ArchiveError(f"The zip entry {shown} is an absolute path: refused")
    if re.match(r"[A-Za-z]:", raw):
        raise ArchiveError(f"The zip entry {shown} starts with a drive letter: refused")
    parts = tuple(raw.rstrip("/").split("/")) if raw.rstrip("/") else ("",)
    if ".." in parts:
        raise ArchiveError(f"The zip entry {shown} holds '..': it would leave the folder, refused")
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(f"The zip entry {shown} is nested {len(parts)} deep; at most {MAX_DEPTH}")
    for part in parts:
        _check_part(part, shown)
    return parts


def _check_part(part: str, shown: str) -> None:
    if not part or part == ".":
        raise ArchiveError(f"The zip entry {shown} has an empty or '.' part: refused")
    if part.startswith(".") or part == HIDDEN:
        return  # hidden: skipped by _plan (".." was refused before)
    odd = any(unicodedata.category(c).startswith("C") for c in part) or not SAFE_NAME.fullmatch(part)
    if odd or len(part) > MAX_PART_CHARS:
        raise ArchiveError(
            f"The zip entry {shown} has the name {part!r}, refused (not renamed): names may use "
            f"{SAFE_CHARS}, up to {MAX_PART_CHARS} characters. Rename it and zip again."
        )


def _check_kind(info: zipfile.ZipInfo) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, if the zip tool wrote one
    if kind and kind != stat.S_IFREG:
        what = "a symlink" if kind == stat.S_IFLNK else "a special file (not a regular file)"
        raise ArchiveError(f"The zip entry {info.filename!r} is {what}: refused")
    if info.flag_bits & ENCRYPTED:
        raise ArchiveError(f"The zip entry {info.filename!r} is encrypted: zip it without a password")
    if info.compress_type not in METHODS:
        raise ArchiveError(
            f"The zip entry {info.filename!r} uses compression method {info.compress_type}; accepted: "
            f"{', '.join(METHODS.values())} (what zip tools write by default)"
        )


def _check_declared_size(info: zipfile.ZipInfo, limits: Limits) -> None:
    if info.file_size > limits.entry_bytes:
        raise ArchiveError(
            f"The zip entry {info.filename!r} unpacks to {info.file_size:,} bytes; at most "
            f"{limits.entry_bytes:,} per file"
        )
    _check_ratio(info, info.file_size, limits)


def _check_ratio(info: zipfile.ZipInfo, size: int, limits: Limits) -> None:
    if size > RATIO_FLOOR and size > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveError(
            f"The zip entry {info.filename!r} expands from {info.compress_size:,} to {size:,}+ bytes, more "
            f"than {limits.max_ratio} times: a zip bomb, refused"
        )


def _check_declared_total(entries: list[_Entry], limits: Limits) -> None:
    """The sizes the headers declare, in all, within the limit."""
    total = sum(e.info.file_size for e in entries)
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"The zip unpacks to {total:,} bytes (as its headers say); at most {limits.max_total_bytes:,}"
        )


def _stripped(entries: list[_Entry]) -> list[_Entry]:
    """Without their one shared top folder, if every entry lies inside the same one."""
    tops = {e.target.parts[0] for e in entries}
    if len(tops) != 1 or any(len(e.target.parts) < 2 for e in entries):
        return entries
    return [_Entry(e.info, PurePosixPath(*e.target.parts[1:])) for e in entries]


def _check_unique(entries: list[_Entry]) -> None:
    """No two entries with one name, and no file where another entry needs a folder."""
    files: set[PurePosixPath] = set()
    for e in entries:
        if e.target in files:
            raise ArchiveError(f"The zip holds {e.info.filename!r} twice: duplicate names are refused")
        files.add(e.target)
    folders = {parent for e in entries for parent in e.target.parents}
    clash = sorted(str(f) for f in files & folders)
    if clash:
        raise ArchiveError(f"The zip holds {clash[0]!r} both as a file and as a folder: refused")


# ---------------------------------------------------------------- writing, bytes counted


def _write_all(archive: zipfile.ZipFile, entries: list[_Entry], root: Path, limits: Limits) -> None:
    budget = limits.max_total_bytes
    for e in entries:
        target = root.joinpath(*e.target.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        budget -= _copy(archive, e.info, target, budget, limits)


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: Limits) -> int:
    """Stream one entry to `target`, counting bytes; returns how many. Stops, refusing, at the entry's
    declared size, the total left (`budget`) or the ratio limit, whatever the header said."""
    written = 0
    try:
        with archive.open(info) as source, target.open("xb") as out:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                _check_streamed(info, written, budget, limits)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise ArchiveError(f"The zip entry {info.filename!r} is damaged or truncated ({e})") from e
    return written


def _check_streamed(info: zipfile.ZipInfo, written: int, budget: int, limits: Limits) -> None:
    if written > info.file_size:
        raise ArchiveError(
            f"The zip entry {info.filename!r} unpacks to more than the {info.file_size:,} bytes its header "
            f"declares: refused"
        )
    if written > limits.entry_bytes:
        raise ArchiveError(
            f"The zip entry {info.filename!r} unpacks to more than {limits.entry_bytes:,} bytes (counted "
            f"while unpacking); at most {limits.entry_bytes:,} per file"
        )
    if written > budget:
        raise ArchiveError(
            f"The zip unpacks to more than {limits.max_total_bytes:,} bytes (counted while unpacking): "
            f"refused"
        )
    _check_ratio(info, written, limits)
