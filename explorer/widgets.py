"""Widgets shared by the pages: the page frame (navigation, checkpoint picker, model card), the test
set with its how-to-get-it message (files to put in place or download, or a folder to restore), the
test-image picker, the latent-point input, pictures (PNG bytes shown as they are), and a picture from
the user (a drawing or an upload)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from explorer import loaders, meta, paths, state
from explorer.paths import Checkpoint
from vae_core import VAE, CheckpointError, DatasetError, load_images
from vae_core import explore as ex
from vae_core.data import FOLDER, data_root
from vae_core.preprocess import MAX_FILE_BYTES

# ---------------------------------------------------------------- page frame, picker, model card


def page(title: str, *, sidebar_card: bool = True) -> Checkpoint:
    """Set up a page: config, start-up work (once), navigation, checkpoint picker and model card (in
    the sidebar, unless the page shows the card itself)."""
    st.set_page_config(page_title=f"{title} · VAE explorer", page_icon="🧭", layout="wide")
    loaders.start_once()
    # Latent images are 28×28: let the browser enlarge them with sharp pixels instead of blur.
    st.html("<style>img { image-rendering: pixelated; }</style>")
    with st.sidebar:
        for path, label in paths.PAGES.items():
            st.page_link(path, label=label)
        st.divider()
        ck = pick_checkpoint()
        if sidebar_card:
            card_table(loaders.model(ck), compact=True)
    st.title(title)
    return ck


def pick_checkpoint() -> Checkpoint:
    """The sidebar picker; the choice is the session's checkpoint and the `ckpt` query parameter."""
    startup = paths.startup()
    for problem in startup.problems:
        st.warning(state.plain(problem), icon=":material/folder_off:")
    options = paths.checkpoint_options(opened_models())
    if not options:
        st.error(
            "No checkpoints found under checkpoints/ or runs/. Train one: python -m vae_core train --help"
        )
        open_model()
        st.stop()
    current = state.current_checkpoint(options, startup.checkpoint, paths.DEFAULT_CHECKPOINT)
    state.use_checkpoint(current)
    st.selectbox("Checkpoint", options, key=state.PICKER, on_change=state.on_pick)
    open_model()
    return checkpoint(current)


OPENED = "opened_models"  # session state: the models opened by path, as the picker shows them
OPEN_PATH, OPEN_ZIP, OPEN_MESSAGE = "open_path", "open_zip", "open_message"


def opened_models() -> list[str]:
    """The models opened by server path in this session (an uploaded one lives in the runs folder)."""
    return st.session_state.setdefault(OPENED, [])


def upload_limit_mb() -> int:
    """The largest upload this server accepts, in MB: `server.maxUploadSize` (.streamlit/config.toml)."""
    return int(st.get_option("server.maxUploadSize"))


def open_model() -> None:
    """The sidebar's "Open a model": a checkpoint or ONNX folder by server path, or an uploaded zip of
    an ONNX model; either is checked by loading it, then listed by the picker and selected."""
    limit = upload_limit_mb()
    with st.expander("Open a model", icon=":material/upload_file:"):
        st.text_input(
            "server path",
            key=OPEN_PATH,
            placeholder="/path/to/folder",
            help="a checkpoint folder, its model.pt, or an ONNX model folder on this server; Enter opens it",
            on_change=_open_by_path,
        )
        st.file_uploader(
            "or a zip of an ONNX model",
            type=["zip"],
            key=OPEN_ZIP,
            max_upload_size=limit,
            help=f"encoder.onnx, decoder.onnx and vae.json (at the top of the zip or in one folder), up to "
            f"{limit} MB (the server's maxUploadSize); it is unpacked under "
            f"{paths.shown(paths.imported_dir())}/ and checked before use",
            on_change=_open_by_upload,
        )
    if said := st.session_state.pop(OPEN_MESSAGE, None):
        kind, text = said
        (st.success if kind == "success" else st.error)(plain(text))


def _open_by_path() -> None:
    """Callback of the path box: check and load the model, then select it; or say why not."""
    wanted = st.session_state[OPEN_PATH].strip()
    if not wanted:
        return
    try:
        name = paths.open_path(wanted)
        _use_opened(name)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError
        st.session_state[OPEN_MESSAGE] = ("error", f"Cannot open {wanted}: {e}")
        return
    if name not in paths.checkpoint_options():
        opened_models().append(name)


def _open_by_upload() -> None:
    """Callback of the uploader: unpack, check and select the zipped ONNX model; or say why not."""
    upload = st.session_state[OPEN_ZIP]
    if upload is None:
        return
    try:
        _use_opened(paths.open_model_zip(upload.getvalue(), upload.name))
    except (ValueError, OSError) as e:  # ArchiveError and CheckpointError are ValueErrors
        st.session_state[OPEN_MESSAGE] = ("error", f"Cannot open {upload.name}: {e}")


def _use_opened(name: str) -> None:
    """Load an opened model (raising if it does not load), then make it the session's checkpoint."""
    loaders.model(Checkpoint(name, loaders.folder_mtime(paths.resolve(name))))
    st.session_state[state.CHECKPOINT] = st.query_params["ckpt"] = name
    st.session_state[OPEN_MESSAGE] = ("success", f"Opened {name}.")


def checkpoint(name: str) -> Checkpoint:
    """A checkpoint by its shown name, loaded (and cached) once; stops the page with a message if it fails."""
    try:
        ck = Checkpoint(name, loaders.folder_mtime(paths.resolve(name)))
        loaders.model(ck)
    except (OSError, CheckpointError) as e:
        st.error(plain(f"Cannot load {name}: {e}"))
        st.stop()
    return ck


def card_table(model: VAE, *, compact: bool = False) -> None:
    """The model card as a sidebar list (compact) or a table."""
    rows = meta.card(model)
    if compact:
        st.markdown("\n".join(f"- **{k}**: {v}" for k, v in rows.items()))
    else:
        st.table(pd.DataFrame({"value": rows}))


def plain(text: object) -> str:
    """Text from a user or the system (a run name, a path, an error message) for st.error, st.warning,
    st.info, st.success or st.toast, shown as itself: Markdown's special characters escaped (so that
    backslashes stay and backticks are not code) and its line breaks kept."""
    return state.plain(str(text)).replace("\n", "  \n")


@contextmanager
def errors() -> Iterator[None]:
    """Show a bad setting or a failed computation as a message, never a traceback."""
    try:
        yield
    except (ValueError, RuntimeError, CheckpointError) as e:
        st.error(plain(f"{type(e).__name__}: {e}"))


# ---------------------------------------------------------------- the test set


# The shipped emoji model's folder (relative to the project root) and the script that builds it.
EMOJI_FOLDER = Path("data/emoji")
BUILD_EMOJI = f"python checkpoints/build_emoji_folder.py {EMOJI_FOLDER.as_posix()}"


def test_set(model: VAE) -> loaders.TestSet | None:
    """The test split of the model's dataset, or None after telling the user how to provide it."""
    name = meta.dataset(model)
    try:
        return loaders.test_set(meta.data_key(model))
    except DatasetError as e:
        if name == FOLDER:
            st.warning(missing_folder(model.meta.spec.data.folder, e), icon=":material/folder_off:")
            return None
        st.warning(
            f"Parts of this page need the {name} test set. {e}\n\n"
            f"For this app: put the IDX files in `{data_root() / name}`, or start it with "
            f"`streamlit run app.py -- --data-dir DIR`, or set `VAE_DATA_DIR`, then reload.",
            icon=":material/folder_open:",
        )
        if st.button(f"Download {name} now with torchvision (needs the internet)", key=f"download_{name}"):
            _download(name)
        return None


def missing_folder(folder: str, error: Exception) -> str:
    """Why a folder model's test images are missing, and how to get the folder its spec names back."""
    said = f"Parts of this page need the test images of the folder `{folder}` this model was trained on. "
    if not folder:
        return said + plain(error)
    where = Path(folder) if Path(folder).is_absolute() else paths.PROJECT_ROOT / folder
    if where.resolve() == (paths.PROJECT_ROOT / EMOJI_FOLDER).resolve():
        how = f"Build it with `{BUILD_EMOJI}` (from the project root), then reload."
    else:
        how = f"Restore `{folder}` (its images, a subfolder per class) where the spec names it, then reload."
    return f"{said}{plain(error)}\n\n{how}"


def _download(name: str) -> None:
    with st.spinner(f"Downloading {name}…"):
        try:
            load_images(name, "test", download=True)
        except DatasetError as e:
            st.error(plain(e))
            return
    st.rerun()


def random_indices(n: int, k: int, seed: int) -> np.ndarray:
    """k distinct indices below n, the same for the same seed."""
    return np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)


def test_image_picker(test: loaders.TestSet, key: str, *, default_class: int = 0) -> int:
    """Pick a test image by class and rank within it; returns its index in the test set."""
    names = ["any", *test.classes]
    left, right = st.columns(2)
    chosen = state.choice(
        left.selectbox, "class", names, key=f"{key}_class", default=names[default_class + 1]
    )
    pool = np.arange(len(test)) if chosen == "any" else np.flatnonzero(test.labels == names.index(chosen) - 1)
    nth = state.number_input("image #", 0, max(len(pool) - 1, 0), key=f"{key}_nth", default=0, where=right)
    return int(pool[min(int(nth), len(pool) - 1)])


# ---------------------------------------------------------------- latent points


def origin(model: VAE) -> np.ndarray:
    return np.zeros(model.config.latent_dim, np.float32)


def latent_input(
    ck: Checkpoint,
    test: loaders.TestSet | None,
    key: str,
    *,
    sources: tuple[str, ...] = state.SOURCES,
    default_class: int = 0,
) -> np.ndarray:
    """A latent point chosen by the user: the origin, a prior sample, a test image or an encoded digit.
    Its widgets are seeded from the URL and written back to it, so that a copied link shows the same point."""
    model = loaders.model(ck)
    sources = tuple(s for s in sources if test is not None or s != state.TEST_IMAGE)
    default = sources[-1] if test is not None else sources[0]
    mine = state.encoded(ck)
    sources = (*sources, state.ENCODED) if mine is not None else sources
    if st.session_state.get(key, default) not in sources:
        del st.session_state[key]  # e.g. your digit, chosen under another checkpoint
    source = state.choice(
        st.radio, key, sources, key=key, default=default, horizontal=True, label_visibility="collapsed"
    )
    if source == state.ENCODED:
        return mine  # not in the URL: the digit lives in this session only
    if source == state.PRIOR:
        seed = state.number_input("seed", 0, state.MAX_SEED, key=f"{key}_seed", default=default_class)
        state.to_url(**{key: source, f"{key}_seed": seed})
        return ex.sample_prior(model, 1, seed=seed)[0]
    if source == state.TEST_IMAGE:
        index = test_image_picker(test, f"{key}_img", default_class=default_class)
        picked = {k: st.session_state[k] for k in (f"{key}_img_class", f"{key}_img_nth")}
        state.to_url(**{key: source, **picked})
        return loaders.scores(ck, test)["mu"][index]
    state.to_url(**{key: source})
    return origin(model)


def dim_label(kl_per_dim: list[float] | None, inactive: np.ndarray) -> Callable[[int], str]:
    """A format_func for choosing a latent dimension: its index, KL and whether it is inactive."""

    def label(i: int) -> str:
        if not kl_per_dim:
            return f"z[{i}]"
        return f"z[{i}] · KL {kl_per_dim[i]:.2f}" + (" · inactive" if inactive[i] else "")

    return label


def send_to_sliders(ck: Checkpoint, z: np.ndarray) -> None:
    """Make z the Sliders page's current point for this checkpoint, and say so with a link."""
    state.set_z(ck, z)
    st.success(f"Sent z = ({', '.join(f'{v:.2f}' for v in z)}) to the sliders.")
    st.page_link("pages/2_Sliders.py", label="Open it on the Sliders page", icon=":material/tune:")


# ---------------------------------------------------------------- pictures and downloads


def png(images: np.ndarray, nrow: int | None = None, *, scale: int = 1) -> bytes:
    """One image (H, W) or a batch (N, H, W) tiled `nrow` per row, as PNG bytes."""
    pixels = ex.to_pixels(images)
    return ex.to_png(pixels if nrow is None else ex.tile(pixels, nrow), scale=scale)


def grid_png(images: np.ndarray, *, scale: int = 1) -> bytes:
    """A decoded grid (rows, cols, H, W) as one tiled PNG."""
    rows, cols = images.shape[:2]
    return png(images.reshape(rows * cols, *images.shape[2:]), cols, scale=scale)


GRID_SIDES = (2, 15, 30)  # a latent grid's cells per side: fewest, default, most (for 28x28 grey images)
GRID_VALUES = GRID_SIDES[2] ** 2 * 28 * 28  # pixel values decoded by the largest grid of 28x28 grey images


def max_grid_side(image_shape: tuple[int, ...]) -> int:
    """The most cells per side of a latent grid of these images: at most as many pixel values as the
    largest 28x28 grey grid, 7 a side for 64x64 colour. The decode and the PNG grow with the cells, and
    a larger colour grid is shrunk by the browser to the figure's 640 pixels anyway."""
    side = math.isqrt(GRID_VALUES // math.prod(image_shape))
    return max(GRID_SIDES[0] + 1, min(GRID_SIDES[2], side))  # a slider needs two values at least


FEWEST_BY_DEFAULT = 5  # cells per side a grid of large images starts at, at least


def default_grid_side(image_shape: tuple[int, ...]) -> int:
    """The side a grid starts at: as many pixel values as the 15x15 digit grid (so a colour picture
    gets bigger cells: 7 a side at 32x32), at least FEWEST_BY_DEFAULT, at most `max_grid_side`."""
    side = math.isqrt(GRID_SIDES[1] ** 2 * GRID_VALUES // GRID_SIDES[2] ** 2 // math.prod(image_shape))
    return min(max_grid_side(image_shape), max(FEWEST_BY_DEFAULT, side))


def grid_side(image_shape: tuple[int, ...]) -> int:
    """The grid-size slider, up to `max_grid_side` for the model's images."""
    high = max_grid_side(image_shape)
    default = default_grid_side(image_shape)
    return state.slider("grid size (cells per side)", GRID_SIDES[0], high, key="n", default=default)


INLINE_BYTES = 8192  # a PNG up to this size travels in the page's message itself, as a data URI


def picture(data: bytes, *, caption: str | None = None, width: int | str = "content") -> None:
    """st.image that keeps our PNG bytes as they are (Streamlit's "auto" would re-encode them as JPEG).

    A small PNG (a decoded 28×28 image is under 1 KB) is sent inline as a data URI: as a media file it
    would cost the browser one more request per rerun, and under load a fast-moving slider's next rerun
    removed the file before the browser had fetched it (a broken image, a 404)."""
    if len(data) <= INLINE_BYTES:
        st.image("data:image/png;base64," + base64.b64encode(data).decode(), caption=caption, width=width)
    else:
        st.image(data, caption=caption, width=width, output_format="PNG")


def image_row(images: np.ndarray, captions: list[str], *, width: int = 112) -> None:
    """Images side by side, each with its caption."""
    for column, image, caption in zip(st.columns(len(images)), images, captions, strict=True):
        with column:
            picture(png(image), caption=caption, width=width)


def image_strip(images: np.ndarray, captions: list[str], *, width: int = 56) -> None:
    """Small images side by side, each with its caption, wrapping onto more lines when the row is
    narrower than they are (`image_row` gives each a column instead)."""
    row = st.container(horizontal=True, gap="small")
    for image, caption in zip(images, captions, strict=True):
        with row:
            picture(png(image), caption=caption, width=width)


def csv_bytes(z: np.ndarray) -> bytes:
    """One latent vector or a batch as CSV with columns z_0 … z_{D-1}."""
    z = np.atleast_2d(z)
    buffer = io.StringIO()
    pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])]).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


# ---------------------------------------------------------------- a picture from the user

CANVAS = 280  # px: 10 canvas pixels per MNIST pixel
# A digit drawn ~200 px tall is scaled to MNIST's 20-px box: a 20-px brush becomes a 2-px pen stroke.
BRUSH = 20
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"]


def drawing(key: str) -> bytes | None:
    """A black canvas to draw one digit on in white; its PNG bytes once something is drawn, else None."""
    from streamlit_drawable_canvas import st_canvas  # a component: loaded only by pages that draw

    st.caption("Draw one digit, large, with the mouse (or a finger); the toolbar undoes or clears.")
    canvas = st_canvas(
        stroke_width=BRUSH,
        stroke_color="#ffffff",
        background_color="#000000",
        width=CANVAS,
        height=CANVAS,
        return_image_data=True,
        key=key,
    )
    drawn = bool(canvas.json_data and canvas.json_data.get("objects"))
    return canvas.image_bytes if drawn else None


UPLOAD_LABELS = {  # by vae_core.preprocess.preprocessing
    "digit": "A picture of one digit (light on dark or dark on light)",
    "picture": "A picture (resized and centre-cropped to the model's size)",
}


def upload(key: str, preprocessing: str = "digit") -> tuple[bytes | None, str]:
    """A file uploader for a picture of one digit (or, for a "picture" model, of anything): its bytes
    (None until one is chosen) and file name."""
    chosen = st.file_uploader(
        UPLOAD_LABELS[preprocessing],
        type=UPLOAD_TYPES,
        max_upload_size=round(MAX_FILE_BYTES / 1e6),
        key=key,
    )
    return (chosen.getvalue() if chosen else None), (chosen.name if chosen else "")
