"""Turn an uploaded picture or a canvas drawing into the tensor a model takes.

Owns: safe decoding of untrusted image data (file-size, pixel-count and format limits), and the
two preprocessings, chosen per model by `preprocessing`:
- "digit" (`preprocess_image`), for models of handwritten strokes (DIGIT_SETS at 1 x 28 x 28): the
  conversion of any Pillow mode or numpy array to grey levels, background/polarity/noise handling,
  and MNIST's own size-and-centre normalisation: the ink's longest side scaled to 20 px inside a
  28x28 black field, its centre of mass moved to (14, 14) (measured on MNIST: the mean centre of
  mass of the test digits is (13.99, 14.00) in row/column index coordinates).
- "picture" (`preprocess_picture`), for every other model (colour, other sizes, Fashion-MNIST's
  garments, which are not ink to centre by mass): `fit_picture`, the very transform a folder import
  applies to each file (vae_core.folder), so an upload encodes as the same file imported would.

The digit rules, in order:
- Alpha: if fewer than half the pixels are opaque (alpha > 0.5), the opaque part is the ink and
  alpha itself is the ink map, whatever the stroke colour (a drawable-canvas export: white or
  black strokes on a transparent ground). Otherwise transparency is composited on white.
- Background: the median of a thin border band. If the border is uneven (its segments' medians
  differ by more than UNEVEN, e.g. a phone photo lit from one side), the background is instead a
  smooth surface through the medians of an 8x8 grid of blocks.
- Polarity: ink is whichever side of the background (lighter or darker) holds more mass beyond
  the noise floor, so dark-on-light is inverted and light-on-dark is kept. Dark ink is divided
  by the local paper level, so a stroke in shadow counts as much as one in the light.
- Noise: images with noisy borders get a 3x3 median filter. Deviations below NOISE_K times the
  border's noise, or below MIN_FLOOR of the largest deviation (JPEG ringing), are background.
  When cropping, runs of rows or columns cut off from the rest of the ink by empty ones and
  holding under SPECK_MASS of it (dust) are ignored.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFilter, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageError",
    "fit_picture",
    "preprocess",
    "preprocess_image",
    "preprocess_picture",
    "preprocessing",
]

MAX_FILE_BYTES = 20_000_000
MAX_PIXELS = 40_000_000
WORK_SIDE = 1024  # larger images are box-downscaled first; the result is 20 px anyway
FIELD_SIDE, DIGIT_SIDE, CENTRE = 28, 20, 14.0
OPAQUE_MINORITY = 0.5
UNEVEN, BLOCKS = 0.05, 8
SMALL_SIDE = 32  # smaller images are taken as clean drawings: no median filter, flat background
NOISY_SIGMA, NOISE_K, MIN_FLOOR, MIN_INK = 0.01, 4.0, 0.04, 0.05
SPECK_MASS = 0.02
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
MODES = {1: "L", 3: "RGB"}  # a picture's Pillow mode by its channels
WHITE = (255, 255, 255, 255)  # what transparency is composited on
# Datasets of handwritten strokes on black, normalised as MNIST is: their models take "digit"
# preprocessing and offer the drawing canvas. Fashion-MNIST's garments are photos, not ink.
DIGIT_SETS = ("mnist", "kmnist")
DIGIT_SHAPE = (1, FIELD_SIDE, FIELD_SIDE)
PREPROCESSINGS = ("digit", "picture")
_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "AVIF")
_FORMAT_HINT = "Upload a PNG, JPEG, GIF, BMP, TIFF or WebP image."


class ImageError(ValueError):
    """The input cannot be turned into a digit; the message says why and what to do."""


def preprocessing(image_shape: tuple[int, ...], dataset: str) -> str:
    """How a model's uploads are prepared: "digit" for a model of handwritten strokes (DIGIT_SETS at
    1 x 28 x 28; these also offer the drawing canvas), "picture" for every other model."""
    digit = tuple(image_shape) == DIGIT_SHAPE and dataset in DIGIT_SETS
    return "digit" if digit else "picture"


def preprocess(data, image_shape: tuple[int, ...], dataset: str) -> torch.Tensor:
    """`data` as the (1, C, H, W) float32 batch in [0, 1] a model of this shape and dataset takes,
    prepared as `preprocessing` says. Raises ImageError for unusable input."""
    if preprocessing(image_shape, dataset) == "digit":
        return preprocess_image(data)  # (1, 1, 28, 28)
    return preprocess_picture(data, image_shape)[None]  # (1, C, H, W)


def preprocess_picture(data, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Return `data` as a (C, H, W) float32 tensor in [0, 1] for `image_shape` = (C, S, S), C 1 or 3.

    `data`: bytes-like, a binary file object (read from its start), a PIL image, or a numpy array
    (H, W) / (H, W, 1-4 channels). The same limits as `preprocess_image`; then `fit_picture`: first
    frame, EXIF orientation, transparency on white, grey or RGB, short side resized, centre crop.
    Raises ImageError, and nothing else, for anything that is not a usable image.
    """
    channels, side = _picture_shape(image_shape)
    img = _to_picture(data)
    _check_pixels(*img.size)
    try:
        pixels = fit_picture(img, side, channels)  # (C, S, S) uint8
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise _corrupt(exc) from exc
    return torch.from_numpy(pixels).float().div_(255)


def fit_picture(img: Image.Image, side: int, channels: int) -> np.ndarray:
    """A Pillow image (its current frame) as (channels, side, side) uint8: EXIF orientation applied,
    transparency composited on white, grey ("L") or RGB, the short side resized to `side` (LANCZOS;
    a JPEG first decoded at the smallest DCT scale still at least `side`), then centre-cropped.
    The one transform of both a folder import and an upload of a picture."""
    img.draft(None, (side, side))  # JPEG only: decode at a reduced DCT scale
    img.load()
    img = _fit(_to_mode(_upright(img), channels), side)
    return np.asarray(img).reshape(side, side, channels).transpose(2, 0, 1).copy()  # (C, S, S)


def _picture_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of a square (C, S, S) image shape; ValueError otherwise."""
    if len(image_shape) != 3 or image_shape[0] not in MODES or image_shape[1] != image_shape[2]:
        raise ValueError(
            f"image_shape must be (channels, side, side) with 1 or 3 channels, got {tuple(image_shape)}"
        )
    return int(image_shape[0]), int(image_shape[1])


def _to_picture(data) -> Image.Image:
    """`data` as a Pillow image, only its header read when it comes as bytes or a file."""
    if isinstance(data, np.ndarray):
        return _array_to_image(data)
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "read"):
        return _open(_read_bytes(data), draft_side=None)  # fit_picture drafts at `side` itself
    return _to_gray(data)  # raises the message of an unreadable type


def _array_to_image(arr: np.ndarray) -> Image.Image:
    """An (H, W) or (H, W, 1-4) array as an 8-bit Pillow image (L, LA, RGB or RGBA)."""
    arr = _check_array(arr)  # (H, W, C)
    _check_pixels(arr.shape[1], arr.shape[0])
    levels = np.clip(arr.astype(np.float32) * (255 / _array_scale(arr)), 0, 255).round().astype(np.uint8)
    return Image.fromarray(levels[..., 0] if levels.shape[2] == 1 else levels)


def _upright(img: Image.Image) -> Image.Image:
    """A sideways phone photo made upright by its EXIF orientation."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return ImageOps.exif_transpose(img)
    return img


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """`img` as "L" or "RGB", transparency composited on white, deep (16-bit, float) grey scaled."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _deep_to_grey(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, WHITE), img.convert("RGBA"))
    return img.convert(MODES[channels])


def _deep_to_grey(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as "L", scaled from its nominal range (1, 255 or 65535)."""
    arr = np.asarray(img, dtype=np.float32)
    top = float(arr.max(initial=0))
    full = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0 if top > 1 else 1.0
    return Image.fromarray(np.clip(arr * (255 / full), 0, 255).round().astype(np.uint8), "L")


def _fit(img: Image.Image, side: int) -> Image.Image:
    """Resize the short side to `side` (LANCZOS), then centre-crop to side x side."""
    width, height = img.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return img.crop((left, top, left + side, top + side))


def preprocess_image(data) -> torch.Tensor:
    """Return `data` as a (1, 1, 28, 28) float32 tensor in [0, 1], white digit on black.

    `data`: bytes-like, a binary file object (read from its start), a PIL image, or a numpy
    array (H, W) / (H, W, 1-4 channels), uint8, uint16 or float in [0, 1] or [0, 255].
    Raises ImageError, and nothing else, for anything that is not a usable digit image.
    """
    gray = _to_gray(data)  # (H, W) in [0, 1], any polarity, longest side <= WORK_SIDE
    ink = _extract_ink(gray)  # (H, W) >= 0, light ink on 0
    field = _fit_field(ink[_ink_box(ink)])  # (28, 28)
    return torch.from_numpy(field / field.max())[None, None]  # (1, 1, 28, 28)


def _to_gray(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return _array_to_gray(data)
    if isinstance(data, Image.Image):
        return _image_to_gray(data)
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "read"):
        return _image_to_gray(_open(_read_bytes(data)))
    hint = " (to load a file by path, pass open(path, 'rb'))" if isinstance(data, str) else ""
    raise ImageError(
        f"Cannot read an image from a {type(data).__name__}{hint}; pass bytes, a binary file "
        "object, a PIL image or a numpy array."
    )


def _read_bytes(data) -> bytes:
    if hasattr(data, "read"):
        try:
            if getattr(data, "seekable", lambda: False)():
                data.seek(0)
            data = data.read(MAX_FILE_BYTES + 1)
        except Exception as exc:  # closed files, broken streams: anything a stream can raise
            raise ImageError(f"Could not read the uploaded file ({exc}). Upload it again.") from exc
        if isinstance(data, str):
            raise ImageError("The file was opened in text mode; open it in binary mode ('rb').")
    raw = bytes(data)
    if not raw:
        raise ImageError("The image is empty (0 bytes). Upload an image file with a digit in it.")
    if len(raw) > MAX_FILE_BYTES:
        raise ImageError(
            f"The file is larger than the {MAX_FILE_BYTES / 1e6:.0f} MB limit. "
            "Crop or resize the image and upload it again."
        )
    return raw


def _open(raw: bytes, draft_side: int | None = WORK_SIDE) -> Image.Image:
    """The image with its header read; a JPEG set to decode at the smallest scale >= draft_side."""
    try:  # Pillow's own bomb check warns at 89 Mpx (an error only with warnings as errors)
        img = Image.open(io.BytesIO(raw), formats=_formats())  # reads the header only
        if draft_side is not None:
            img.draft(None, (draft_side, draft_side))  # JPEG only: decode at 1/2..1/8 scale
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels() from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"Not a supported image: the data looks like {_describe(raw)}. {_FORMAT_HINT}"
        ) from exc
    except Exception as exc:  # Pillow's header parsers raise many types on malformed input
        raise _corrupt(exc) from exc
    return img


def _formats() -> list[str]:
    Image.init()
    return [name for name in _FORMATS if name in Image.OPEN]


def _describe(raw: bytes) -> str:
    head = raw[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    kinds = {b"pk\x03\x04": "a ZIP archive", b"%pdf": "a PDF document", b"\x1f\x8b": "gzip data"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    if b"<svg" in head:
        return "an SVG vector drawing (export it as PNG first)"
    if b"<html" in head or b"<!doctype html" in head:
        return "an HTML web page"
    if raw[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "a HEIC photo (convert it to JPEG first)"
    try:
        raw[:512].decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised binary data (it starts with {raw[:8].hex(' ')})"
    return "a text file"


def _image_to_gray(img: Image.Image) -> np.ndarray:
    _check_pixels(*img.size)
    try:
        img.load()  # the current (first) frame only
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            img = ImageOps.exif_transpose(img)  # a sideways phone photo made upright
        gray, alpha = _gray_and_alpha(_shrink(_normalise_mode(img)))
    except ImageError:
        raise
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise _corrupt(exc) from exc
    return _merge_alpha(gray, alpha)


def _check_pixels(width: int, height: int) -> None:
    if width * height == 0:
        raise ImageError(f"The image is empty ({width} x {height} pixels).")
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(f"{width} x {height} pixels")


def _too_many_pixels(found: str = "") -> ImageError:
    found = f" ({found})" if found else ""
    return ImageError(
        f"The image has too many pixels{found}: the limit is {MAX_PIXELS / 1e6:.0f} megapixels, "
        "to guard against decompression bombs. Resize it and upload it again."
    )


def _corrupt(exc: Exception) -> ImageError:
    return ImageError(
        f"Could not decode the image: the file may be corrupt or truncated, or use an unusual "
        f"colour mode ({exc}). Re-save it as PNG or JPEG and upload it again."
    )


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Return `img` as "L", "RGBA" (transparency kept) or "F" scaled to [0, 1] (deep images)."""
    if img.mode in ("F", "I") or img.mode.startswith("I;16"):
        arr = np.array(img, dtype=np.float32)  # a writable copy
        arr /= 65535.0 if img.mode.startswith("I;16") else _nominal_range(arr, (1, 255, 65535))
        return Image.fromarray(arr)
    if img.mode in ("LA", "PA", "RGBA") or "transparency" in img.info:
        return img if img.mode == "RGBA" else img.convert("RGBA")
    if img.mode == "CMYK":
        return img.convert("RGB").convert("L")
    if img.mode == "LAB":
        return img.getchannel("L")  # L* is lightness already
    return img.convert("L")


def _shrink(img: Image.Image) -> Image.Image:
    factor = WORK_SIDE / max(img.size)
    if factor >= 1:
        return img
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    if factor <= 0.5:  # integer box-averaging first: no full-size premultiplied RGBA copy
        img = img.reduce(int(1 / factor))
    return img.resize(size, Image.Resampling.BOX)


def _gray_and_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32), None
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if img.mode != "RGBA":
        return gray, None
    return gray, np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0


def _array_to_gray(arr: np.ndarray) -> np.ndarray:
    arr = _check_array(arr)  # (H, W, C)
    _check_pixels(arr.shape[1], arr.shape[0])
    scale = _array_scale(arr)
    channels = [_shrink_channel(arr[..., c], scale) for c in range(arr.shape[2])]
    gray = channels[0] if len(channels) <= 2 else np.tensordot(LUMA, channels[:3], axes=1)
    alpha = channels[-1] if len(channels) in (2, 4) else None
    return _merge_alpha(gray, alpha)


def _check_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.size == 0:
        hint = " (channels go last)" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ImageError(
            f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4){hint}; got shape {arr.shape}."
        )
    if arr.dtype.kind not in "buif":
        raise ImageError(f"Unsupported array dtype {arr.dtype}; use uint8, uint16 or float.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError("The image array contains NaN or infinite values; replace them first.")
    return arr


def _array_scale(arr: np.ndarray) -> float:
    """The value of full white: 1 for bool, the dtype's maximum for uint8/uint16, else by range."""
    if arr.dtype.kind == "b":
        return 1.0
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        return 255.0 if arr.dtype.itemsize == 1 else 65535.0
    if float(arr.min()) < 0:
        raise ImageError(f"The image array has negative values (min {arr.min():g}).")
    ranges = (1, 255) if arr.dtype.kind == "f" else (255, 65535)
    return _nominal_range(arr, ranges)


def _nominal_range(arr: np.ndarray, ranges: tuple[float, ...]) -> float:
    top = float(arr.max())
    for limit in ranges:
        if top <= limit:
            return float(limit)
    raise ImageError(f"Image values go up to {top:g}; expected at most {ranges[-1]:g}. Rescale the image.")


def _shrink_channel(channel: np.ndarray, scale: float) -> np.ndarray:
    channel = channel.astype(np.float32) / np.float32(scale)
    if max(channel.shape) <= WORK_SIDE:
        return channel
    return np.asarray(_shrink(Image.fromarray(channel)))


def _merge_alpha(gray: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None:
        return gray
    if np.mean(alpha > 0.5) < OPAQUE_MINORITY:
        return alpha  # strokes on a transparent ground: the opaque part is the ink
    return gray * alpha + (1.0 - alpha)  # composite on white paper


def _extract_ink(gray: np.ndarray) -> np.ndarray:
    if min(gray.shape) >= SMALL_SIDE and _noise_sigma(gray) > NOISY_SIGMA:
        gray = np.asarray(Image.fromarray(gray).filter(ImageFilter.MedianFilter(3)))
    paper = _background(gray)
    diff = gray - paper
    border = _border(diff)
    noise = 1.4826 * np.median(np.abs(border - np.median(border)))
    floor = max(NOISE_K * noise, MIN_FLOOR * float(np.abs(diff).max()))  # JPEG ringing too
    light, dark = np.clip(diff - floor, 0, None), np.clip(-diff - floor, 0, None)
    # dark ink absorbs a fraction of the light falling on it: divide by the local lighting
    ink = light if light.sum() >= dark.sum() else dark / np.maximum(paper, 0.1)
    if ink.max() < MIN_INK:
        raise _no_ink()
    return ink


def _no_ink() -> ImageError:
    return ImageError(
        "No ink found: the image looks blank or uniform. Draw a digit, or photograph a dark "
        "digit on light paper (or a light digit on a dark background)."
    )


def _border(a: np.ndarray) -> np.ndarray:
    b = max(1, min(a.shape) // 50)
    return np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])


def _noise_sigma(gray: np.ndarray) -> float:
    """Pixel noise from differences of neighbours along the outermost rows and columns."""
    lines = (gray[0], gray[-1], gray[:, 0], gray[:, -1])
    steps = np.concatenate([np.diff(line) for line in lines])
    return float(1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2))


def _background(gray: np.ndarray) -> np.ndarray | float:
    """The paper's level: uniform from the border, or a smooth surface if lighting is uneven."""
    if min(gray.shape) < SMALL_SIDE:
        return float(np.median(_border(gray)))
    sides = (gray[0], gray[-1], gray[:, 0], gray[:, -1])
    medians = [np.median(part) for side in sides for part in np.array_split(side, 4)]
    if np.ptp(medians) <= UNEVEN:
        return float(np.median(_border(gray)))
    grid = [
        [np.median(block) for block in np.array_split(strip, BLOCKS, axis=1)]
        for strip in np.array_split(gray, BLOCKS, axis=0)
    ]
    # one extra block on each side, extrapolated linearly, so the edges are not clamped
    grid = np.pad(np.array(grid, dtype=np.float32), 1, mode="reflect", reflect_type="odd")
    surface = Image.fromarray(grid).resize(
        gray.shape[::-1], Image.Resampling.BILINEAR, box=(1, 1, BLOCKS + 1, BLOCKS + 1)
    )
    return np.asarray(surface)


def _ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    return _span(ink.sum(axis=1)), _span(ink.sum(axis=0))


def _span(profile: np.ndarray) -> slice:
    """The extent of the ink along one axis, leaving out islands with < SPECK_MASS of it."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], profile > 0, [0]]).astype(np.int8)))
    starts, stops = edges[::2], edges[1::2]  # runs of non-zero rows (or columns)
    masses = np.array([profile[a:b].sum() for a, b in zip(starts, stops, strict=True)])
    keep = np.flatnonzero(masses >= min(SPECK_MASS * masses.sum(), masses.max()))
    return slice(int(starts[keep[0]]), int(stops[keep[-1]]))


def _fit_field(patch: np.ndarray) -> np.ndarray:
    """Scale the longest side to 20 px and place the centre of mass at (14, 14) in 28x28."""
    scale = DIGIT_SIDE / max(patch.shape)
    size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    small = np.asarray(Image.fromarray(patch).resize(size, Image.Resampling.LANCZOS))
    small = np.clip(small, 0, None)  # Lanczos rings below zero next to strong edges
    mass = small.sum()
    if mass <= 0:
        raise _no_ink()
    rows, cols = np.indices(small.shape)
    top = _offset(CENTRE - (rows * small).sum() / mass, FIELD_SIDE - small.shape[0])
    left = _offset(CENTRE - (cols * small).sum() / mass, FIELD_SIDE - small.shape[1])
    field = np.zeros((FIELD_SIDE, FIELD_SIDE), dtype=np.float32)
    field[top : top + small.shape[0], left : left + small.shape[1]] = small
    return field


def _offset(shift: float, room: int) -> int:
    return int(np.clip(round(shift), 0, room))  # clipped so the digit stays inside the field
