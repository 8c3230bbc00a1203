"""The safe zip unpacker: a round trip, and each hostile archive refused with nothing left behind."""

from __future__ import annotations

import io
import stat
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from vae_core import archive
from vae_core.archive import ArchiveError, Limits, unpack_zip

LIMITS = Limits(max_files=100, max_total_bytes=10 * 2**20)
GIB = 2**30
MEMORY_BOUND = 32 * 2**20  # bytes the unpacker may allocate while refusing a 1 GiB bomb


def make_zip(entries: dict[str, bytes], **attrs: int) -> bytes:
    """A zip of {name: data} written by zipfile (deflate), each ZipInfo given `attrs`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            for key, value in attrs.items():
                setattr(info, key, value)
            z.writestr(info, data)
    return buffer.getvalue()


def raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip written by hand, so that headers may lie: (name, deflated data, crc, declared size) each."""
    local, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, size in entries:
        offset, encoded = local.tell(), name.encode()
        fields = (20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(encoded), 0)
        local.write(b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", *fields) + encoded + data)
        # made by, needed, flags, method, time, date, crc, sizes, name, extra, comment, disk, attributes
        header = (20, 20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(encoded), 0, 0, 0, 0, 0)
        central.write(b"PK\x01\x02" + struct.pack("<HHHHHHIIIHHHHHII", *header, offset) + encoded)
    start, directory = local.tell(), central.getvalue()
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries), len(directory), start, 0)
    return local.getvalue() + directory + end


def zeros_deflated(n_mib: int) -> tuple[bytes, int]:
    """`n_mib` MiB of zeros as one raw deflate stream (about 1 KB per MiB), and their CRC-32.

    A full flush resets the compressor, so each MiB compresses to the same bytes: one MiB is
    compressed and its bytes repeated, which builds a 1 GiB bomb in milliseconds."""
    mib = bytes(2**20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(mib, crc)
    return block * n_mib + compressor.flush(), crc


def refused(data: bytes, dest: Path, *words: str, limits: Limits = LIMITS) -> str:
    """unpack_zip refuses `data` with a message holding `words`, and leaves nothing beside `dest`."""
    before = set(dest.parent.iterdir())
    with pytest.raises(ArchiveError) as caught:
        unpack_zip(data, dest, limits)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    assert set(dest.parent.iterdir()) == before, "something was left behind"
    return str(caught.value)


def test_round_trip(tmp_path: Path) -> None:
    """A zip of files in folders unpacks to the same bytes at the same relative paths."""
    entries = {"a.txt": b"alpha", "cats/1.png": b"\x89PNG one", "cats/deep/2.png": bytes(range(256))}
    out = unpack_zip(make_zip(entries), tmp_path / "out", LIMITS)
    assert out.folder == tmp_path / "out" and out.skipped == ()
    assert {p.relative_to(out.folder).as_posix(): p.read_bytes() for p in out.files} == entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder is left


def test_a_deflate_bomb_of_a_gib_is_refused_by_its_header(tmp_path: Path) -> None:
    """1 GiB of zeros in a 1 MiB zip is refused fast from the sizes its header declares."""
    data, crc = zeros_deflated(1024)
    bomb = raw_zip([("zeros.bin", data, crc, GIB)])
    start = time.monotonic()
    refused(bomb, tmp_path / "out", "zeros.bin", "1,073,741,824 bytes")
    assert time.monotonic() - start < 1.0


def test_a_ratio_bomb_within_the_size_limit_is_refused(tmp_path: Path) -> None:
    """An entry that expands more than max_ratio times is refused even when its size is allowed."""
    data, crc = zeros_deflated(8)  # 8 MiB from about 8 KB: a ratio near 1000
    refused(raw_zip([("zeros.bin", data, crc, 8 * 2**20)]), tmp_path / "out", "zip bomb")


def test_the_streamed_bytes_are_counted_whatever_the_header_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the header checks disabled, the byte counter still stops a 1 GiB bomb at the limit,
    quickly and in bounded memory."""
    monkeypatch.setattr(archive, "_check_declared_size", lambda info, limits: None)
    monkeypatch.setattr(archive, "_check_declared_total", lambda entries, limits: None)
    data, crc = zeros_deflated(1024)
    limits = Limits(max_files=10, max_total_bytes=4 * 2**20, max_ratio=10**9)
    tracemalloc.start()
    start = time.monotonic()
    try:
        refused(raw_zip([("zeros.bin", data, crc, GIB)]), tmp_path / "out", "counted", limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5.0
    assert peak < MEMORY_BOUND


def test_a_header_that_understates_the_size_is_refused(tmp_path: Path) -> None:
    """An entry whose data holds more than its header declares fails its check and is refused."""
    data, crc = zeros_deflated(64)
    refused(raw_zip([("zeros.bin", data, crc, 1000)]), tmp_path / "out", "zeros.bin", "damaged")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.txt", ("'..'",)),
        ("a/../../evil.txt", ("'..'",)),
        ("/etc/evil.txt", ("absolute",)),
        ("a\\..\\evil.txt", ("backslash",)),
        ("C:/evil.txt", ("drive letter",)),
        ("a//b.txt", ("empty",)),
        ("./a.txt", ("'.'",)),
        ("bad\x07name.txt", ("refused (not renamed)",)),
        ("what?.txt", ("refused (not renamed)",)),
        ("x" * 300 + ".txt", ("up to 255",)),
        ("/".join(["d"] * 20) + "/a.txt", ("nested 21 deep",)),
    ],
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str, words: tuple[str, ...]) -> None:
    """Absolute paths, '..', backslashes, drive letters, odd characters and deep nesting are refused."""
    refused(make_zip({"ok.txt": b"fine", name: b"evil"}), tmp_path / "out", *words)


def test_a_nul_byte_in_a_name_is_refused(tmp_path: Path) -> None:
    """A name with a NUL byte (which zipfile would silently cut) is refused."""
    data = raw_zip([("good.txt\x00.png", zlib.compress(b"x")[2:-4], zlib.crc32(b"x"), 1)])
    refused(data, tmp_path / "out", "refused (not renamed)")


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    """An entry whose Unix mode is a symlink is refused, not written as a link or a file."""
    data = make_zip({"link": b"/etc/passwd"}, external_attr=(stat.S_IFLNK | 0o777) << 16)
    refused(data, tmp_path / "out", "'link'", "symlink")


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    """More entries than max_files are refused before any is read."""
    data = make_zip({f"{i}.txt": b"" for i in range(11)})
    refused(data, tmp_path / "out", "11 entries", limits=Limits(max_files=10, max_total_bytes=100))


def test_declared_total_above_the_limit_is_refused(tmp_path: Path) -> None:
    """Files each within the limit whose declared sizes add up past it are refused."""
    data = make_zip({"a.bin": bytes(600), "b.bin": bytes(600)})
    limits = Limits(max_files=10, max_total_bytes=1000, max_ratio=10**6)
    refused(data, tmp_path / "out", "1,200 bytes", limits=limits)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    """Two entries of one name are refused (the second would overwrite the first)."""
    data = raw_zip([("a.txt", zlib.compress(b"1")[2:-4], zlib.crc32(b"1"), 1)] * 2)
    refused(data, tmp_path / "out", "twice")


def test_a_file_where_a_folder_is_needed_is_refused(tmp_path: Path) -> None:
    """A file named like another entry's folder is refused."""
    data = make_zip({"a": b"file", "a/b.txt": b"inside"})
    refused(data, tmp_path / "out", "both as a file and as a folder")


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_zips_are_refused(tmp_path: Path, cut: float) -> None:
    """A zip cut short (no central directory) is refused as not readable."""
    data = make_zip({"a.bin": bytes(range(256)) * 100})
    refused(data[: int(len(data) * cut)], tmp_path / "out", "not a readable zip")


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    """Bytes of another format are refused with a message saying so."""
    refused(b"\x89PNG\r\n\x1a\n" + bytes(100), tmp_path / "out", "not a readable zip")


def test_corrupt_entry_data_is_refused_and_removed(tmp_path: Path) -> None:
    """An entry whose compressed bytes are damaged is refused, and the files written before it removed."""
    data = make_zip({"first.txt": b"written first", "second.bin": bytes(range(256)) * 64})
    second = zipfile.ZipFile(io.BytesIO(data)).getinfo("second.bin")
    start = second.header_offset + 30 + len("second.bin") + 10  # inside its deflated bytes
    damaged = data[:start] + bytes(b ^ 0x55 for b in data[start : start + 40]) + data[start + 40 :]
    refused(damaged, tmp_path / "out", "second.bin")


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    """unpack_zip never writes into a folder that exists already."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists"):
        unpack_zip(make_zip({"keep.txt": b"theirs"}), tmp_path / "out", LIMITS)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_endings_and_hidden_entries_are_skipped_and_listed(tmp_path: Path) -> None:
    """With allowed_suffixes, other endings and macOS's hidden entries are skipped and listed."""
    entries = {"cats/1.PNG": b"1", "cats/notes.txt": b"n", "__MACOSX/cats/._1.PNG": b"r", ".DS_Store": b"d"}
    out = unpack_zip(make_zip(entries), tmp_path / "out", Limits(10, 1000, allowed_suffixes=(".png",)))
    assert [p.relative_to(out.folder).as_posix() for p in out.files] == ["cats/1.PNG"]
    assert sorted(name for name, _ in out.skipped) == [".DS_Store", "__MACOSX/cats/._1.PNG", "cats/notes.txt"]


def test_strip_top_drops_one_shared_folder(tmp_path: Path) -> None:
    """strip_top unpacks a zip of DIR/ as DIR's contents, and leaves a zip of several tops as it is."""
    limits = Limits(10, 1000, strip_top=True)
    one = unpack_zip(make_zip({"model/a.json": b"{}", "model/b.onnx": b"x"}), tmp_path / "one", limits)
    assert sorted(p.relative_to(one.folder).as_posix() for p in one.files) == ["a.json", "b.onnx"]
    two = unpack_zip(make_zip({"x/a.png": b"1", "y/b.png": b"2"}), tmp_path / "two", limits)
    assert sorted(p.relative_to(two.folder).as_posix() for p in two.files) == ["x/a.png", "y/b.png"]


def test_unicode_names_are_kept_in_nfc(tmp_path: Path) -> None:
    """Names of other scripts, spaces and '&' unpack, macOS's decomposed accents as composed ones."""
    entries = {"Smileys & Emotion/1f600.png": b"1", "cafe\u0301/\u732b.png": b"2"}
    out = unpack_zip(make_zip(entries), tmp_path / "out", LIMITS)
    assert sorted(p.relative_to(out.folder).as_posix() for p in out.files) == [
        "Smileys & Emotion/1f600.png",
        "caf\u00e9/\u732b.png",
    ]
