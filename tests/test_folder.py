"""A folder of images imported into ImageSets: layouts, the transform, bad files, the cache, the split."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_preprocess import _png_claiming
from vae_core import folder as fo
from vae_core.data import DatasetError, ImageSet, load_images
from vae_core.folder import ImportReport, decode_file, import_folder

LANCZOS = Image.Resampling.LANCZOS
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every import in these tests caches under tmp_path/cache, the default via $VAE_CACHE_DIR."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "folders"


def _save(path: Path, img: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **options)
    return path


def _noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random image: every pixel matters when comparing with a reference."""
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _solid(colour: tuple[int, int, int], side: int = 8) -> Image.Image:
    return Image.new("RGB", (side, side), colour)


def _classes(root: Path, counts: dict[str, int], colour=RED) -> None:
    """root/<class>/<i>.png, each image a distinct solid colour."""
    for c, n in counts.items():
        for i in range(n):
            _save(root / c / f"{i}.png", _solid((colour[0], i * 7 % 256, len(c) * 20 % 256)))


def _snapshot(root: Path) -> list[tuple[str, int, int, int]]:
    """Every file and folder under root with its size, mode and modification time."""
    entries = []
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(Path(here, name))
            entries.append((str(Path(here, name).relative_to(root)), st.st_size, st.st_mode, st.st_mtime_ns))
    return sorted(entries)


def _reasons(report: ImportReport) -> dict[str, str]:
    return dict(report.skipped)


# --- the transform -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "resized", "box"),
    [
        ((40, 100), (16, 40), (0, 12, 16, 28)),
        ((100, 30), (53, 16), (18, 0, 34, 16)),
        ((16, 16), (16, 16), None),
    ],
)
def test_resize_short_side_then_centre_crop_matches_pil(tmp_path: Path, size, resized, box) -> None:
    """A PNG becomes its short side resized to S with LANCZOS, then the centre S x S, as PIL computes it."""
    path = _save(tmp_path / "x.png", _noise(*size))
    reference = Image.open(path).resize(resized, LANCZOS)
    reference = np.asarray(reference.crop(box) if box else reference).transpose(2, 0, 1)
    pixels, note = decode_file(path, 16, 3)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8 and note is None
    np.testing.assert_array_equal(pixels, reference)


def test_grey_is_pillow_luma(tmp_path: Path) -> None:
    """channels=1 gives one plane: Pillow's "L" conversion of the colour image, resized."""
    path = _save(tmp_path / "x.png", _noise(20, 20))
    reference = np.asarray(Image.open(path).convert("L").resize((16, 16), LANCZOS))
    np.testing.assert_array_equal(decode_file(path, 16, 1)[0], reference[None])


def test_jpeg_decoded_at_reduced_scale_stays_close_to_full_decode(tmp_path: Path) -> None:
    """A large JPEG read at a reduced DCT scale differs from the full decode by a few grey levels only."""
    yy, xx = np.mgrid[0:400, 0:600]
    smooth = np.stack([xx * 255 // 600, yy * 255 // 400, (xx + yy) * 255 // 1000], -1).astype(np.uint8)
    path = _save(tmp_path / "x.jpg", Image.fromarray(smooth), quality=95)
    reference = np.asarray(Image.open(path).resize((48, 32), LANCZOS).crop((8, 0, 40, 32)), dtype=float)
    pixels = decode_file(path, 32, 3)[0].transpose(1, 2, 0)
    assert np.abs(pixels - reference).mean() < 2


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    """Transparent pixels of an RGBA PNG and of a P-mode GIF become white; opaque ones keep their colour."""
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # transparent black
    rgba[:, 8:] = (255, 0, 0, 255)  # opaque red on the right
    png = decode_file(_save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA")), 16, 3)[0]
    assert (png[:, :, :8] == 255).all()
    assert (png[:, :, 8:].transpose(1, 2, 0) == RED).all()
    indexed = Image.new("P", (16, 16), 0)
    indexed.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    indexed.paste(1, (0, 0, 16, 8))  # top half: palette entry 1, blue
    gif = decode_file(_save(tmp_path / "p.gif", indexed, transparency=0), 16, 3)[0]
    assert (gif[:, :8].transpose(1, 2, 0) == BLUE).all()
    assert (gif[:, 8:] == 255).all()


def test_animated_gif_gives_its_first_frame_and_a_note(tmp_path: Path) -> None:
    """An animated GIF is imported as its first frame, and the report notes it; it is not skipped."""
    frames = [_solid(c, 16) for c in (RED, GREEN, BLUE)]
    _save(tmp_path / "in" / "anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=50)
    _save(tmp_path / "in" / "still.png", _solid(GREEN, 16))
    result = import_folder(tmp_path / "in", image_size=16)
    images = torch.cat([result.train.images, result.test.images])
    assert any((im.permute(1, 2, 0) == torch.tensor(RED, dtype=torch.uint8)).all() for im in images)
    assert result.report.notes == (("anim.gif", "GIF with 3 frames: first frame used"),)
    assert result.report.n_imported == 2 and not result.report.skipped


@pytest.mark.parametrize("side", [16, 45, 128])
def test_any_size_from_16_to_128(tmp_path: Path, side: int) -> None:
    """Every square side in the range gives (N, C, side, side) uint8 images and int64 labels."""
    _classes(tmp_path / "in", {"a": 2, "b": 2})
    result = import_folder(tmp_path / "in", image_size=side, channels=1)
    for part in (result.train, result.test):
        assert part.images.shape[1:] == (1, side, side) and part.images.dtype == torch.uint8
        assert part.labels.dtype == torch.int64


@pytest.mark.parametrize(("options", "message"), [
    ({"image_size": 15}, "16 to 128"), ({"image_size": 129}, "16 to 128"), ({"image_size": 32.0}, "integer"),
    ({"channels": 2}, "1 .grey. or 3"), ({"test_fraction": 0}, "between 0 and 1"),
])  # fmt: skip
def test_bad_options_are_refused_with_the_range(tmp_path: Path, options, message) -> None:
    """Sizes outside 16-128, channels other than 1 or 3 and a test fraction outside (0, 1) are refused."""
    _classes(tmp_path / "in", {"a": 2})
    with pytest.raises(ValueError, match=message):
        import_folder(tmp_path / "in", **options)


# --- layouts and the split -----------------------------------------------------------------------


def test_class_folders_name_the_labels(tmp_path: Path) -> None:
    """Subfolder names, sorted, are the classes; each image's label is its folder's index."""
    _classes(tmp_path / "in", {"dogs": 3, "cats": 4})
    _save(tmp_path / "in" / "dogs" / "nested" / "deep.jpg", _noise(30, 20))
    result = import_folder(tmp_path / "in", image_size=16)
    assert result.classes == ("cats", "dogs") and result.test.classes == ("cats", "dogs")
    labels = torch.cat([result.train.labels, result.test.labels])
    assert torch.bincount(labels).tolist() == [4, 4]
    assert result.report.class_counts == {"cats": 4, "dogs": 4}
    assert result.train.name == "folder" and result.train.split == "train" and result.test.split == "test"


def test_images_directly_in_the_folder_are_unlabelled(tmp_path: Path) -> None:
    """Without subfolders every image is in the one class "all", label 0; the split is still drawn."""
    for i in range(10):
        _save(tmp_path / "in" / f"{i}.png", _solid((i, 0, 0)))
    result = import_folder(tmp_path / "in", image_size=16)
    assert result.classes == ("all",)
    assert len(result.train) == 9 and len(result.test) == 1
    assert (result.train.labels == 0).all() and (result.test.labels == 0).all()


def test_images_beside_class_folders_are_skipped(tmp_path: Path) -> None:
    """An image directly in DIR next to class folders belongs to no class: skipped, with the reason."""
    _classes(tmp_path / "in", {"a": 2})
    _save(tmp_path / "in" / "loose.png", _solid(RED))
    result = import_folder(tmp_path / "in", image_size=16)
    assert _reasons(result.report)["loose.png"].startswith("outside any class folder")
    assert result.report.n_imported == 2 and result.report.n_found == 3


def test_stratified_split_per_class_and_deterministic(tmp_path: Path) -> None:
    """Each class sends round(f * n) images (at least 1 if n >= 2, 0 if n = 1) to test; a seed fixes which."""
    _classes(tmp_path / "in", {"a": 10, "b": 5, "c": 1, "d": 2})
    split = lambda seed: import_folder(tmp_path / "in", image_size=16, test_fraction=0.2, seed=seed)  # noqa: E731
    first, again, other = split(0), split(0), split(1)
    assert torch.bincount(first.test.labels, minlength=4).tolist() == [2, 1, 0, 1]
    assert torch.bincount(first.train.labels, minlength=4).tolist() == [8, 4, 1, 1]
    assert torch.equal(first.test.images, again.test.images) and torch.equal(
        first.train.images, again.train.images
    )
    assert not torch.equal(first.test.images, other.test.images)


def test_train_and_test_folders_are_the_split(tmp_path: Path) -> None:
    """DIR/train/<class> and DIR/test/<class> are used as they are: test images come from test/ only."""
    _classes(tmp_path / "in" / "train", {"a": 3, "b": 2}, colour=(255, 0, 0))
    _classes(tmp_path / "in" / "test", {"a": 1, "b": 1}, colour=(10, 0, 0))
    result = import_folder(tmp_path / "in", image_size=16, test_fraction=0.5)
    assert result.classes == ("a", "b")
    assert (result.test.images[:, 0] == 10).all() and (result.train.images[:, 0] == 255).all()
    assert result.test.labels.tolist() == [0, 1] and torch.bincount(result.train.labels).tolist() == [3, 2]


def test_load_images_reads_a_folder_by_name(tmp_path: Path) -> None:
    """load_images("folder", split, data_dir=DIR, ...) gives import_folder's splits; IDX sets refuse them."""
    _classes(tmp_path / "in", {"a": 4, "b": 4})
    options = {"image_size": 20, "channels": 1, "test_fraction": 0.25}
    train = load_images("folder", "train", tmp_path / "in", **options)
    test = load_images("folder", "test", data_dir=tmp_path / "in", **options)
    expected = import_folder(tmp_path / "in", **options)
    assert torch.equal(train.images, expected.train.images) and torch.equal(test.labels, expected.test.labels)
    assert train.images.shape[1:] == (1, 20, 20) and test.classes == ("a", "b")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_images("folder", "train")
    with pytest.raises(ValueError, match="image_size: options of the 'folder' dataset only"):
        load_images("mnist", "test", tmp_path, image_size=32)


def test_image_set_keeps_its_class_names_when_moved() -> None:
    """An ImageSet with class names keeps them through .to(); without, the DATASETS names apply."""
    images, labels = torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1])
    named = ImageSet("folder", "train", images, labels, ("cat", "dog")).to("cpu")
    assert named.classes == ("cat", "dog") and named.name == "folder"
    assert ImageSet("mnist", "test", images, labels).to("cpu").classes[9] == "9"


# --- bad files -----------------------------------------------------------------------------------


def _truncated_png() -> bytes:
    """The first two thirds of a 64 x 64 noise PNG: a valid header, pixel data cut short."""
    buf = io.BytesIO()
    _noise(64, 64).save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) * 2 // 3]


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A folder of two good images and one of each kind of bad file, plus an image outside it."""
    root = tmp_path / "in"
    _save(root / "good" / "a.png", _noise(20, 30))
    _save(root / "good" / "b.jpg", _noise(30, 20))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.png").write_bytes(_truncated_png())
    (bad / "text.jpg").write_text("this is not a picture\n")
    (bad / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))
    (bad / "big.png").write_bytes(_png_claiming(10_000, 10_000))  # Pillow warns; our limit refuses it
    (bad / "notes.txt").write_text("ignored: not an image ending")
    outside = _save(tmp_path / "outside.png", _solid(RED))
    (bad / "escape.png").symlink_to(outside)
    (bad / "inside.png").symlink_to(root / "good" / "a.png")
    return root


def test_every_bad_file_is_skipped_and_listed_with_its_reason(messy: Path) -> None:
    """Empty, truncated, non-image, bomb headers and symlinks leaving the folder are skipped with reasons."""
    report = import_folder(messy, image_size=16).report
    reasons = _reasons(report)
    assert reasons["bad/empty.png"] == "empty file (0 bytes)"
    assert reasons["bad/truncated.png"].startswith("cannot decode: corrupt or truncated")
    assert reasons["bad/text.jpg"] == "not an image: the data looks like a text file"
    assert "more pixels than the 40-megapixel limit" in reasons["bad/bomb.png"]
    assert "10000 x 10000 pixels, over the 40-megapixel limit" in reasons["bad/big.png"]
    assert reasons["bad/escape.png"] == "a symlink to a file outside the folder"
    assert len(reasons) == 6 and report.n_ignored == 1
    assert report.class_counts == {"bad": 1, "good": 2}  # the symlink inside the folder is imported
    assert report.n_found == report.n_imported + len(report.skipped) == 9
    assert "Skipped 6:" in report.summary() and "bad/text.jpg: not an image" in report.summary()


def test_the_users_folder_is_never_written(messy: Path, cache_dir: Path) -> None:
    """Importing (and re-importing from the cache) leaves every file and folder under DIR as it was."""
    before = _snapshot(messy)
    import_folder(messy, image_size=16)
    import_folder(messy, image_size=32, channels=1)
    import_folder(messy, image_size=16)
    assert _snapshot(messy) == before
    assert len(list(cache_dir.glob("*/*.npy"))) == 2


def test_a_cache_inside_the_folder_is_refused(messy: Path) -> None:
    """A cache_dir inside the imported folder is refused before anything is written."""
    before = _snapshot(messy)
    with pytest.raises(ValueError, match="inside the imported folder"):
        import_folder(messy, cache_dir=messy / "good" / ".cache")
    assert _snapshot(messy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    """A file without read permission is skipped as unreadable."""
    _classes(tmp_path / "in", {"a": 2})
    locked = _save(tmp_path / "in" / "a" / "locked.png", _solid(RED))
    locked.chmod(0)
    try:
        report = import_folder(tmp_path / "in", image_size=16).report
    finally:
        locked.chmod(0o644)
    assert _reasons(report) == {"a/locked.png": "unreadable: permission denied"}


def test_permission_denied_on_open_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When opening a file raises PermissionError, it is skipped as unreadable and the rest imported."""
    _classes(tmp_path / "in", {"a": 2})
    locked = _save(tmp_path / "in" / "a" / "locked.png", _solid(RED)).resolve()

    def guarded_open(path, *args, **kwargs):
        if Path(path).resolve() == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(fo, "open", guarded_open, raising=False)
    report = import_folder(tmp_path / "in", image_size=16).report
    assert _reasons(report) == {"a/locked.png": "unreadable: permission denied"}
    assert report.n_imported == 2


def test_summary_lists_ten_skipped_files_then_counts(tmp_path: Path) -> None:
    """summary() names the first ten skipped files and counts the rest."""
    _save(tmp_path / "in" / "ok.png", _solid(RED))
    for i in range(13):
        (tmp_path / "in" / f"empty{i:02d}.png").write_bytes(b"")
    summary = import_folder(tmp_path / "in", image_size=16).report.summary()
    assert "Imported 1 of 14 images" in summary and "Classes: all 1" in summary
    assert "empty09.png: empty file" in summary and "empty10.png" not in summary
    assert summary.splitlines()[-1] == "  and 3 more"


# --- clear errors --------------------------------------------------------------------------------


def test_a_path_that_is_not_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    """A missing path and a file each raise one DatasetError naming the path and what was expected."""
    with pytest.raises(DatasetError, match=r"nowhere does not exist; expected a folder of images"):
        import_folder(tmp_path / "nowhere")
    file = _save(tmp_path / "x.png", _solid(RED))
    with pytest.raises(DatasetError, match=r"x.png is not a folder; expected a folder of images"):
        import_folder(file)


def test_an_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    """A folder without image files raises one DatasetError naming it and the expected layout."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("no pictures here")
    with pytest.raises(DatasetError, match=r"in holds no image files to import; expected images"):
        import_folder(tmp_path / "in")


def test_class_folders_without_images_are_one_clear_error(tmp_path: Path) -> None:
    """Class subfolders that hold no image files raise one DatasetError naming them."""
    for name in ("cats", "dogs"):
        (tmp_path / "in" / name).mkdir(parents=True)
    (tmp_path / "in" / "cats" / "list.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"subfolders of .*in \(cats, dogs\) hold no image files"):
        import_folder(tmp_path / "in")


def test_a_folder_of_only_bad_files_is_one_clear_error(tmp_path: Path, cache_dir: Path) -> None:
    """When no file can be decoded, one DatasetError says so with a reason, and no cache is left."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    (tmp_path / "in" / "b.png").write_text("text")
    with pytest.raises(DatasetError, match=r"no image files to import \(2 skipped, e.g. a.png: empty file"):
        import_folder(tmp_path / "in")
    assert not [p for p in cache_dir.rglob("*") if p.is_file()]


# --- the cache -----------------------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files decode_file is called on, in order."""
    calls = []

    def counted(path, *args):
        calls.append(Path(path).name)
        return decode_file(path, *args)

    monkeypatch.setattr(fo, "decode_file", counted)
    return calls


def test_cache_is_reused_until_the_folder_or_transform_changes(tmp_path: Path, decodes, cache_dir) -> None:
    """A second import decodes nothing; a changed file or image size imports again and replaces the entry."""
    _classes(tmp_path / "in", {"a": 3, "b": 2})
    first = import_folder(tmp_path / "in", image_size=16)
    again = import_folder(tmp_path / "in", image_size=16)
    assert len(decodes) == 5 and again.report.from_cache and not first.report.from_cache
    assert torch.equal(first.train.images, again.train.images) and again.report.n_imported == 5
    changed = tmp_path / "in" / "a" / "0.png"
    _save(changed, _solid(BLUE))
    os.utime(changed, ns=(1, 1))
    import_folder(tmp_path / "in", image_size=16)
    assert len(decodes) == 10
    import_folder(tmp_path / "in", image_size=24)
    assert len(decodes) == 15
    cached = sorted(p.name.split("-")[0] for p in cache_dir.glob("*/*.npy"))
    assert cached == ["s16c3", "s24c3"]  # the stale 16 px entry was replaced


def test_cached_array_holds_exactly_the_imported_images(messy: Path) -> None:
    """The .npy on disk is (n_imported, C, S, S) uint8 even when files were skipped, and reads back mapped."""
    result = import_folder(messy, image_size=16)
    mapped = np.load(result.cache_file, mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.shape == (3, 3, 16, 16) and mapped.dtype == np.uint8
    everything = torch.cat([result.train.images, result.test.images]).numpy()
    assert sorted(map(bytes, everything)) == sorted(map(bytes, np.asarray(mapped)))


def test_progress_reports_each_decoded_file(tmp_path: Path) -> None:
    """progress(done, total) is called once per file while decoding, ending at (total, total)."""
    _classes(tmp_path / "in", {"a": 3})
    calls = []
    import_folder(tmp_path / "in", image_size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    fo.tqdm_progress("test")(3, 3)  # the terminal's callback accepts the same calls


def test_train_folder_without_test_images_is_one_clear_error(tmp_path: Path) -> None:
    """A train/ + test/ layout whose test/ holds no images raises one DatasetError saying so."""
    _classes(tmp_path / "in" / "train", {"a": 2})
    (tmp_path / "in" / "test" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"train/ and test/ folders, but one holds no image files"):
        import_folder(tmp_path / "in")


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    """A symlinked class folder is not followed (its images could be anywhere): noted, not imported."""
    _classes(tmp_path / "in", {"a": 2})
    _classes(tmp_path / "elsewhere", {"b": 2})
    (tmp_path / "in" / "b").symlink_to(tmp_path / "elsewhere" / "b", target_is_directory=True)
    result = import_folder(tmp_path / "in", image_size=16)
    assert result.classes == ("a",) and result.report.n_found == 2
    assert result.report.notes == (("b/", "a symlinked folder: not followed"),)
