"""preprocess_picture: an upload for a colour or non-digit model, prepared exactly as the same file
imported from a folder; and which models get which preprocessing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from vae_core.folder import cache_folder
from vae_core.preprocess import (
    ImageError,
    preprocess,
    preprocess_image,
    preprocess_picture,
    preprocessing,
)


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A random image: every pixel matters when comparing two pipelines."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels)


def _bytes(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _sideways_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate 90° clockwise to view
    return _bytes(_noise(90, 50, seed=3), "JPEG", exif=exif, quality=90)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])


FILES = {
    "wide.png": lambda: _bytes(_noise(70, 40), "PNG"),
    "tall.jpg": lambda: _bytes(_noise(33, 80, seed=1), "JPEG", quality=85),
    "big.jpg": lambda: _bytes(_noise(300, 260, seed=2), "JPEG"),  # decoded at a reduced DCT scale
    "sideways.jpg": _sideways_jpeg,
    "alpha.png": lambda: _bytes(_noise(48, 48, "RGBA", seed=4), "PNG"),
    "grey.png": lambda: _bytes(_noise(20, 36, "L", seed=5), "PNG"),
    "animated.gif": _animated_gif,
    "small.webp": lambda: _bytes(_noise(12, 12, seed=6), "WEBP", lossless=True),
}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("side", [16, 32])
def test_an_upload_encodes_exactly_as_the_same_file_imported_from_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int, side: int
) -> None:
    """For every kind of file (wide, tall, large JPEG, EXIF-rotated, transparent, grey, animated,
    WebP), preprocess_picture gives the folder import's pixels / 255, bit for bit."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "images"
    folder.mkdir()
    for name, make in FILES.items():
        (folder / name).write_bytes(make())
    npy = cache_folder(folder, image_size=side, channels=channels)
    images = torch.from_numpy(np.load(npy))  # (N, C, S, S) uint8, in the record's file order
    names = json.loads(npy.with_suffix(".json").read_text())["files"]
    assert sorted(names) == sorted(FILES)
    for name, pixels in zip(names, images, strict=True):
        x = preprocess_picture((folder / name).read_bytes(), (channels, side, side))
        assert x.shape == (channels, side, side) and x.dtype == torch.float32, name
        torch.testing.assert_close(x, pixels.float() / 255, rtol=0, atol=0, msg=name)


def test_exif_orientation_transparency_and_first_frame() -> None:
    """A sideways photo is turned upright, transparency becomes white, an animation gives frame 1."""
    upright = preprocess_picture(_sideways_jpeg(), (3, 16, 16))
    assert upright.shape == (3, 16, 16)  # 50 wide x 90 tall once rotated: the crop is square anyway
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    np.testing.assert_array_equal(preprocess_picture(_bytes(clear, "PNG"), (3, 16, 16)).numpy(), 1.0)
    first = preprocess_picture(_animated_gif(), (3, 16, 16))
    torch.testing.assert_close(first[:, 8, 8], torch.tensor([1.0, 0.0, 0.0]))


def test_a_pil_image_and_an_array_give_the_same_as_their_bytes() -> None:
    """preprocess_picture takes a PIL image or a uint8 (H, W, C) array as it takes the PNG bytes."""
    img = _noise(50, 30, seed=7)
    expected = preprocess_picture(_bytes(img, "PNG"), (3, 24, 24))
    torch.testing.assert_close(preprocess_picture(img, (3, 24, 24)), expected, rtol=0, atol=0)
    torch.testing.assert_close(preprocess_picture(np.asarray(img), (3, 24, 24)), expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "looks like a text file"),
        (_bytes(_noise(40, 40), "PNG")[:200], "corrupt or truncated"),
        (np.broadcast_to(np.uint8(0), (1, 40_000_001)), "too many pixels"),
        ("photo.png", "pass open"),
    ],
)
def test_hostile_input_is_refused_with_the_digit_pipelines_messages(data: object, message: str) -> None:
    """Empty, non-image, truncated and oversized input, and a path string, raise ImageError naming why."""
    with pytest.raises(ImageError, match=message):
        preprocess_picture(data, (3, 32, 32))


def test_a_picture_claiming_too_many_pixels_is_refused_before_decoding() -> None:
    """A PNG header claiming 10,000 x 10,000 pixels is refused by the 40-megapixel limit."""
    from tests.test_preprocess import _png_claiming

    with pytest.raises(ImageError, match=r"too many pixels.*40 megapixels"):
        preprocess_picture(_png_claiming(10_000, 10_000), (3, 32, 32))


@pytest.mark.parametrize("shape", [(2, 32, 32), (3, 32, 16), (3, 32)])
def test_a_shape_that_is_not_square_grey_or_rgb_is_refused(shape: tuple[int, ...]) -> None:
    """image_shape must be (1 or 3, S, S); the message names the shape given."""
    with pytest.raises(ValueError, match=r"image_shape must be \(channels, side, side\)"):
        preprocess_picture(_bytes(_noise(8, 8), "PNG"), shape)


@pytest.mark.parametrize(
    ("shape", "dataset", "kind"),
    [
        ((1, 28, 28), "mnist", "digit"),
        ((1, 28, 28), "kmnist", "digit"),  # handwritten characters: strokes centred as MNIST's
        ((1, 28, 28), "fashion-mnist", "picture"),  # garments, not ink: no centring by mass
        ((1, 28, 28), "folder", "picture"),
        ((3, 32, 32), "cifar10", "picture"),
        ((3, 28, 28), "mnist", "picture"),
        ((1, 32, 32), "mnist", "picture"),
    ],
)
def test_only_digit_models_get_the_digit_preprocessing(shape: tuple, dataset: str, kind: str) -> None:
    """Grey 28 x 28 models of MNIST or KMNIST get digit preprocessing; every other model a picture's."""
    assert preprocessing(shape, dataset) == kind


def test_preprocess_dispatches_to_the_models_pipeline() -> None:
    """preprocess gives a digit model preprocess_image's batch, others preprocess_picture's (1, C, H, W)."""
    digit = Image.new("L", (60, 60), 255)
    digit.paste(0, (20, 10, 35, 50))
    data = _bytes(digit, "PNG")
    torch.testing.assert_close(preprocess(data, (1, 28, 28), "mnist"), preprocess_image(data))
    picture = preprocess(data, (1, 28, 28), "fashion-mnist")
    torch.testing.assert_close(picture, preprocess_picture(data, (1, 28, 28))[None])
    assert preprocess(data, (3, 40, 40), "folder").shape == (1, 3, 40, 40)
