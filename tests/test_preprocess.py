"""Tests for vae_core.preprocess: every input kind becomes one clean MNIST-style digit."""

from __future__ import annotations

import gzip
import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from vae_core.preprocess import MAX_PIXELS, ImageError, preprocess_image

MNIST_TEST = Path("/work/shared/mnist/t10k-images-idx3-ubyte.gz")


def _glyph(size=(90, 120), ink=0, paper=255, width=9) -> Image.Image:
    """An asymmetric 'L' with a flag at its top (greyscale), so rotations and flips show."""
    img = Image.new("L", size, paper)
    w, h = size
    draw = ImageDraw.Draw(img)
    draw.line([(0.3 * w, 0.2 * h), (0.3 * w, 0.8 * h), (0.7 * w, 0.8 * h)], fill=ink, width=width)
    draw.line([(0.3 * w, 0.2 * h), (0.65 * w, 0.35 * h)], fill=ink, width=width)
    return img


def _digit(data) -> np.ndarray:
    """The (28, 28) array that preprocess_image makes of `data`."""
    return preprocess_image(data)[0, 0].numpy()


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two digits."""
    return float(np.abs(a - b).mean())


def _near(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest mean absolute difference of two digits, allowing a shift of 1 px."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return min(_gap(np.roll(a, shift, axis=(0, 1)), b) for shift in shifts)


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    """`img` saved in format `fmt` into bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header (with a valid CRC) claims width x height pixels."""
    raw = bytearray(_encode(Image.new("L", (8, 8)), "PNG"))
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The digit made from the glyph given as a plain uint8 array."""
    return _digit(np.asarray(_glyph()))


def test_output_is_a_unit_range_float_tensor(reference):
    """The result is a (1, 1, 28, 28) float32 tensor spanning exactly [0, 1]."""
    out = preprocess_image(np.asarray(_glyph()))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 1, 28, 28)
    assert out.dtype == torch.float32
    assert out.min() == 0.0
    assert out.max() == 1.0


def test_polarity_does_not_matter(reference):
    """A dark digit on white paper and the same digit white on black give the same result."""
    assert _gap(_digit(np.asarray(_glyph(ink=255, paper=0))), reference) < 0.01


def test_centre_of_mass_is_at_14_14(reference):
    """The ink's centre of mass lies within one pixel of (14, 14), as in MNIST."""
    rows, cols = np.indices(reference.shape)
    mass = reference.sum()
    assert abs((rows * reference).sum() / mass - 14) <= 1
    assert abs((cols * reference).sum() / mass - 14) <= 1


def test_longest_side_of_ink_is_20(reference):
    """The ink's bounding box has a longest side of about 20 px."""
    rows, cols = np.nonzero(reference)
    assert 19 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 20


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0.01),
        ("BMP", {}, 0.01),
        ("TIFF", {}, 0.01),
        ("WEBP", {"lossless": True}, 0.01),
        ("GIF", {}, 0.01),
        ("PPM", {}, 0.01),
        ("JPEG", {"quality": 90}, 0.03),
    ],
)
def test_image_formats(reference, fmt, options, tolerance):
    """An RGB glyph saved in each supported format comes out as the reference digit."""
    data = _encode(_glyph().convert("RGB"), fmt, **options)
    assert _near(_digit(data), reference) < tolerance


@pytest.mark.parametrize(
    "wrap",
    [
        bytearray,
        memoryview,
        io.BytesIO,
        lambda raw: io.BufferedReader(io.BytesIO(raw)),
        lambda raw: _read_to_end(io.BytesIO(raw)),
    ],
    ids=["bytearray", "memoryview", "BytesIO", "BufferedReader", "BytesIO-already-read"],
)
def test_bytes_like_and_file_objects(reference, wrap):
    """Bytes-like objects and binary streams (even ones already read) are all accepted."""
    assert _gap(_digit(wrap(_encode(_glyph(), "PNG"))), reference) < 0.01


def _read_to_end(stream: io.BytesIO) -> io.BytesIO:
    """`stream` after reading it once, as Streamlit's UploadedFile is on a rerun."""
    stream.read()
    return stream


def test_pil_image_input(reference):
    """A PIL image is accepted directly."""
    assert _gap(_digit(_glyph()), reference) < 0.01


@pytest.mark.parametrize("mode", ["P", "I", "RGBX", "YCbCr", "HSV", "LAB", "PA"])
def test_other_pil_modes(reference, mode):
    """PIL images in less common modes are converted to grey levels correctly."""
    assert _gap(_digit(_glyph().convert("RGB").convert(mode)), reference) < 0.02


def test_bilevel_mode_1(reference):
    """A 1-bit image is read as black and white."""
    assert _gap(_digit(_encode(_glyph().convert("1", dither=None), "PNG")), reference) < 0.02


def test_16bit_png(reference):
    """A 16-bit greyscale PNG is scaled from 0..65535."""
    deep = Image.fromarray(np.asarray(_glyph()).astype(np.uint16) * 257)
    data = _encode(deep, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert _gap(_digit(data), reference) < 0.01


def test_float_mode_image(reference):
    """A Pillow "F" image with values in [0, 1] is accepted."""
    assert _gap(_digit(Image.fromarray(np.asarray(_glyph(), np.float32) / 255)), reference) < 0.01


def test_palette_png_with_transparency(reference):
    """A palette PNG with a transparent background uses its opaque strokes as the ink."""
    img = _glyph().convert("P")
    img.info["transparency"] = img.getpixel((0, 0))
    data = _encode(img, "PNG", transparency=img.getpixel((0, 0)))
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert _gap(_digit(data), reference) < 0.01


def test_la_png(reference):
    """A grey+alpha PNG with dark strokes on a transparent ground is read by its alpha."""
    alpha = np.asarray(_glyph(ink=255, paper=0))
    la = np.stack([np.zeros_like(alpha), alpha], axis=-1)
    assert _gap(_digit(_encode(Image.fromarray(la, "LA"), "PNG")), reference) < 0.01


@pytest.mark.parametrize("stroke", [255, 0])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_canvas_rgba(reference, stroke, dtype):
    """Canvas RGBA (opaque strokes of any colour on transparent black) uses alpha as ink."""
    alpha = np.asarray(_glyph(ink=255, paper=0))
    rgb = np.where(alpha[..., None] > 0, stroke, 0).repeat(3, axis=-1)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1).astype(dtype)  # floats in 0..255
    assert _gap(_digit(rgba), reference) < 0.01


def test_mostly_opaque_rgba_is_composited_on_white(reference):
    """An RGBA image with an opaque majority is composited on white, so dark ink stays ink."""
    rgba = _glyph().convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    ImageDraw.Draw(rgba).rectangle([0, 0, 10, 10], fill=(0, 0, 0, 0))  # a transparent corner
    assert _gap(_digit(_encode(rgba, "PNG")), reference) < 0.01


def test_cmyk_jpeg(reference):
    """A CMYK JPEG (as print workflows write) is converted through RGB."""
    data = _encode(_glyph().convert("RGB").convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert _near(_digit(data), reference) < 0.03


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_animation_uses_first_frame(reference, fmt):
    """Of an animated GIF/WebP or multi-page TIFF only the first frame is used."""
    second = Image.new("RGB", (90, 120), "white")
    ImageDraw.Draw(second).rectangle([10, 10, 40, 100], fill="black")
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames = _encode(_glyph().convert("RGB"), fmt, save_all=True, append_images=[second], **options)
    assert getattr(Image.open(io.BytesIO(frames)), "n_frames", 1) == 2
    assert _gap(_digit(frames), reference) < 0.01


def test_exif_orientation_is_applied(reference):
    """A sideways JPEG with EXIF orientation 6 comes out upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = _glyph().convert("RGB").transpose(Image.Transpose.ROTATE_90)
    data = _encode(sideways, "JPEG", quality=95, exif=exif)
    assert _near(_digit(data), reference) < 0.03
    assert _near(_digit(np.asarray(sideways)), reference) > 0.1  # the check can fail


def test_phone_photo_is_cleaned():
    """Ink on unevenly lit, noisy, dusty paper (a phone photo) gives the clean digit on black."""
    rng = np.random.default_rng(0)
    h, w = 600, 450
    rows, cols = np.mgrid[:h, :w] / 600
    vignette = ((rows - 0.4) ** 2 + (cols - 0.5) ** 2) * 0.8
    lighting = 0.5 + 0.4 * cols - vignette  # brighter towards the right, darker corners
    mask = np.asarray(_glyph((w, h), ink=255, paper=0, width=24)) / 255.0
    photo = lighting * (1 - 0.75 * mask) + rng.normal(0, 0.04, (h, w))
    photo[40:48, 380:388] *= 0.3  # a speck of dust far from the digit
    data = _encode(Image.fromarray((np.clip(photo, 0, 1) * 255).astype(np.uint8)), "JPEG")
    clean = _digit(np.asarray(_glyph((w, h), width=24)))
    out = _digit(data)
    assert _near(out, clean) < 0.03  # fails if the dust is kept: the digit would shrink
    near_ink = np.asarray(Image.fromarray(clean).filter(ImageFilter.MaxFilter(3))) > 0
    assert out[~near_ink].max() < 0.05  # the paper is black: no shading, texture or noise


def test_large_photo_is_downscaled(reference):
    """A 48-megapixel JPEG is decoded at reduced scale and still gives the digit."""
    big = _glyph().resize((6000, 8000), Image.Resampling.BILINEAR)
    t0 = time.perf_counter()
    out = _digit(_encode(big, "JPEG", quality=80))
    assert time.perf_counter() - t0 < 10
    assert _near(out, reference) < 0.05


def _mnist(count: int) -> np.ndarray:
    """The first `count` MNIST test images, read from the IDX file."""
    with gzip.open(MNIST_TEST) as f:
        header = f.read(16)
        _, rows, cols = struct.unpack(">III", header[4:])
        return np.frombuffer(f.read(count * rows * cols), np.uint8).reshape(count, rows, cols)


@pytest.mark.skipif(not MNIST_TEST.exists(), reason=f"MNIST test images not found at {MNIST_TEST}")
def test_mnist_digits_round_trip():
    """Real MNIST digits, already normalised, come back nearly unchanged."""
    gaps = [_gap(_digit(x), x / 255.0) for x in _mnist(50)]
    assert np.median(gaps) < 0.01
    assert max(gaps) < 0.1


def test_thin_tall_line():
    """A 1-px wide '1' in a 1000x5 image becomes a 20 px tall, 1 px wide stroke."""
    arr = np.full((1000, 5), 255, np.uint8)
    arr[50:950, 2] = 0
    out = _digit(arr)
    rows, cols = np.nonzero(out)
    assert np.ptp(rows) + 1 == 20
    assert np.ptp(cols) + 1 == 1


def test_extreme_aspect_ratio():
    """A 3000x1 px horizontal stroke fits 20 px wide and stays inside the field."""
    arr = np.zeros((40, 3200), np.uint8)
    arr[20, 100:3100] = 255
    out = _digit(arr)
    rows, cols = np.nonzero(out)
    assert np.ptp(cols) + 1 == 20
    assert np.ptp(rows) + 1 <= 2


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float32) / 255,
        lambda a: a.astype(np.uint16) * 257,
        lambda a: a.astype(np.int64),
        lambda a: a > 127,
        lambda a: np.repeat(a[..., None], 3, axis=-1),
        lambda a: a[..., None],
    ],
    ids=["float01", "uint16", "int64", "bool", "HxWx3", "HxWx1"],
)
def test_numpy_dtypes_and_shapes(reference, convert):
    """Numpy arrays of every accepted dtype and channel count give the reference digit."""
    assert _gap(_digit(convert(np.asarray(_glyph()))), reference) < 0.03


@pytest.mark.parametrize(
    "data",
    [
        Image.new("L", (50, 50), 255),
        Image.new("L", (50, 50), 0),
        np.full((30, 30, 3), 0.5),
        Image.new("RGBA", (40, 40), (255, 255, 255, 0)),
        np.zeros((1, 1), np.uint8),
        _encode(Image.new("L", (1, 1), 0), "PNG"),
    ],
    ids=["white", "black", "grey", "transparent", "1x1-array", "1x1-png"],
)
def test_blank_images_have_no_ink(data):
    """Blank or uniform images (including 1x1 ones) raise 'No ink found'."""
    with pytest.raises(ImageError, match="No ink found"):
        preprocess_image(data)


def test_tiny_image_with_one_ink_pixel():
    """A single ink pixel in a 2x2 image becomes a blob centred in the field."""
    arr = np.zeros((2, 2), np.uint8)
    arr[0, 1] = 255
    out = _digit(arr)
    rows, cols = np.indices(out.shape)
    assert abs((rows * out).sum() / out.sum() - 14) <= 1
    assert abs((cols * out).sum() / out.sum() - 14) <= 1


def test_noise_alone_is_not_ink():
    """Plain paper with sensor noise is blank, not a digit."""
    noise = np.random.default_rng(1).normal(0.8, 0.03, (200, 200)).clip(0, 1)
    with pytest.raises(ImageError, match="No ink found"):
        preprocess_image(noise)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (np.random.default_rng(2).bytes(4096), "unrecognised binary data"),
        (b"The digit seven, written out in words.\n" * 20, "a text file"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<!DOCTYPE html><html><body>7</body></html>", "HTML"),
        (b"%PDF-1.7\n", "PDF"),
    ],
    ids=["random", "text", "svg", "html", "pdf"],
)
def test_not_an_image(raw, words):
    """Non-image data is refused with what it looks like and the formats to use."""
    with pytest.raises(ImageError, match=rf"Not a supported image.*{words}.*PNG, JPEG"):
        preprocess_image(raw)


def test_zip_file_is_refused():
    """A ZIP archive (even one holding a PNG) is recognised as such and refused."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("seven.png", _encode(_glyph(), "PNG"))
    with pytest.raises(ImageError, match="ZIP archive"):
        preprocess_image(buf.getvalue())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt):
    """A file cut off half-way raises a 'corrupt or truncated' error."""
    data = _encode(_glyph((300, 300)).convert("RGB"), fmt)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        preprocess_image(data[: len(data) // 2])


def test_garbled_header():
    """A PNG whose header bytes are garbled raises ImageError, not a Pillow exception."""
    data = bytearray(_encode(_glyph(), "PNG"))
    data[16:24] = b"\xff" * 8
    with pytest.raises(ImageError):
        preprocess_image(bytes(data))


def test_empty_bytes():
    """Zero bytes raise an 'empty' error."""
    with pytest.raises(ImageError, match="empty"):
        preprocess_image(b"")


def test_file_too_large():
    """A file over the size limit is refused before decoding, naming the limit."""
    with pytest.raises(ImageError, match="20 MB limit"):
        preprocess_image(io.BytesIO(b"\x89PNG" + bytes(20_000_000)))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [100_000, 10_000, 7_000])
def test_decompression_bomb(side):
    """A PNG claiming side x side pixels is refused quickly, naming the megapixel limit."""
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"too many pixels.*40 megapixels"):
        preprocess_image(_png_claiming(side, side))
    assert time.perf_counter() - t0 < 1


def test_huge_array_is_refused():
    """A numpy array over the pixel limit is refused without being converted."""
    with pytest.raises(ImageError, match="too many pixels"):
        preprocess_image(np.broadcast_to(np.uint8(0), (1, MAX_PIXELS + 1)))


@pytest.mark.parametrize(
    ("arr", "words"),
    [
        (np.zeros((3, 28, 28)), "channels go last"),
        (np.zeros((2, 28, 28, 3)), "shape"),
        (np.zeros((28, 28, 5)), "shape"),
        (np.zeros((0, 28)), "shape"),
        (np.zeros((28, 28), complex), "dtype"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), -1.0), "negative"),
        (np.full((28, 28), 300.0), "up to 300"),
    ],
    ids=["CHW", "batch", "5-channels", "empty", "complex", "nan", "negative", "too-bright"],
)
def test_bad_arrays(arr, words):
    """Arrays of the wrong shape, dtype or range raise ImageError saying what is wrong."""
    with pytest.raises(ImageError, match=words):
        preprocess_image(arr)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (None, "NoneType"),
        (7, "int"),
        ("seven.png", r"open\(path, 'rb'\)"),
        ([[0, 255]], "list"),
        (io.StringIO("seven"), "binary mode"),
    ],
    ids=["None", "int", "path-string", "list", "text-file"],
)
def test_unsupported_types(data, words):
    """Inputs of an unsupported type raise ImageError naming the type and what to pass."""
    with pytest.raises(ImageError, match=words):
        preprocess_image(data)
