"""The explorer's one Streamlit-aware module: cached loaders, the checkpoint picker, the model card,
shared widgets and figures. Pages call these and `vae_core.explore`; they hold no tensor maths.

Caches are keyed by plain strings and numbers (a checkpoint's path and modification time, a dataset
name and folder), never by hashing a model: `st.cache_resource` holds models and the read-only test
set, `st.cache_data` the arrays computed from them.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from vae_core import (
    DATASETS,
    VAE,
    CheckpointError,
    DatasetError,
    eval_inputs,
    list_checkpoints,
    load_checkpoint,
)
from vae_core import explore as ex
from vae_core.data import data_root
from vae_core.jobs import runs_dir
from vae_core.projection import warm_up_umap

PROJECT_ROOT = Path(__file__).resolve().parent
CHECKPOINT_ROOTS = (PROJECT_ROOT / "checkpoints", runs_dir())
DEFAULT_CHECKPOINT = "checkpoints/mnist-2d"
PAGES = {  # the sidebar's links: home, then every file in pages/ as Streamlit names it ("1_Latent_grid.py")
    "app.py": "Overview",
    **{
        f"pages/{p.name}": re.sub(r"^\d+_", "", p.stem).replace("_", " ")
        for p in sorted((PROJECT_ROOT / "pages").glob("*.py"))
    },
}
MAP_POINTS = 5000  # test images drawn on latent maps: enough to see the classes, light in the browser
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

# Interactive decodes are a few milliseconds of small matrix products; one thread per call is
# faster than two fighting over a busy CPU (measured: 8 ms vs 48 ms for a 20×20 grid) and keeps
# concurrent sessions from oversubscribing the machine.
torch.set_num_threads(1)

# UMAP's numba kernels take 30-40 s to compile on first use: do it in the background as soon as the
# server imports this module, so the Atlas page never waits for it (VAE_WARM_UP_UMAP=0 skips it).
if os.environ.get("VAE_WARM_UP_UMAP", "1") != "0":
    warm_up_umap()


@dataclass(frozen=True)
class Checkpoint:
    """The selected checkpoint as cache keys: its folder (as shown) and the model file's mtime."""

    name: str
    mtime: float

    @property
    def path(self) -> Path:
        return resolve(self.name)


@dataclass(frozen=True)
class TestSet:
    """A dataset's test split for display: images uint8 (N, 1, H, W), labels (N,), class names."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.name].classes

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- start-up options and paths


def cli_args() -> argparse.Namespace:
    """`streamlit run app.py -- --checkpoint PATH --data-dir DIR`; unknown arguments are ignored."""
    return _parse_args(tuple(sys.argv[1:]))


@functools.cache  # every rerun asks; the arguments are parsed once
def _parse_args(argv: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoint")
    parser.add_argument("--data-dir")
    return parser.parse_known_args(argv)[0]


def shown(path: str | Path) -> str:
    """A checkpoint folder as the picker shows it: relative to the project when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def resolve(name: str) -> Path:
    return PROJECT_ROOT / name if not Path(name).is_absolute() else Path(name)


def startup_checkpoint() -> str | None:
    """The checkpoint asked for at start: --checkpoint, else $VAE_CHECKPOINT."""
    wanted = cli_args().checkpoint or os.environ.get("VAE_CHECKPOINT")
    return shown(Path(wanted).parent if Path(wanted).suffix == ".pt" else wanted) if wanted else None


def checkpoint_options() -> list[str]:
    """Shipped and trained checkpoints, plus the one asked for at start wherever it lives."""
    options = [shown(p) for p in list_checkpoints(*CHECKPOINT_ROOTS)]
    start = startup_checkpoint()
    return [*options, start] if start and start not in options else options


def data_dir() -> str | None:
    return cli_args().data_dir


# ---------------------------------------------------------------- cached loaders


@st.cache_resource(max_entries=6, show_spinner="Loading the model…")
def load_model(name: str, mtime: float) -> VAE:
    """The model of a checkpoint; `mtime` is only a cache key, so a retrained file is reloaded."""
    return load_checkpoint(resolve(name))


def model(ck: Checkpoint) -> VAE:
    return load_model(ck.name, ck.mtime)


@st.cache_resource(max_entries=4, show_spinner="Reading the test set…")
def _test_arrays(name: str, folder: str | None, root: str) -> tuple[np.ndarray, np.ndarray]:
    """One read-only copy per server: st.cache_data would unpickle its 8 MB on every rerun.

    `root` ($VAE_DATA_DIR or data/) is a cache key only: the lookup reads it from the environment."""
    from vae_core import load_images

    test = load_images(name, "test", data_dir=folder, download=False)
    arrays = test.images.numpy(), test.labels.numpy()
    for array in arrays:
        array.setflags(write=False)  # shared by every session: no page may change it in place
    return arrays


def test_set(name: str) -> TestSet | None:
    """The test split of a dataset, or None after telling the user how to provide it."""
    try:
        return TestSet(name, *_test_arrays(name, data_dir(), str(data_root())))
    except DatasetError as e:
        st.warning(
            f"Parts of this page need the {name} test set. {e}\n\n"
            f"For this app: put the IDX files in `{data_root() / name}`, or start it with "
            f"`streamlit run app.py -- --data-dir DIR`, or set `VAE_DATA_DIR`, then reload.",
            icon=":material/folder_open:",
        )
        if st.button(f"Download {name} now with torchvision (needs the internet)", key=f"download_{name}"):
            _download(name)
        return None


def _download(name: str) -> None:
    from vae_core import load_images

    with st.spinner(f"Downloading {name}…"):
        try:
            load_images(name, "test", download=True)
        except DatasetError as e:
            st.error(str(e))
            return
    st.rerun()


def model_inputs(ck: Checkpoint, test: TestSet, indices: np.ndarray | list[int]) -> torch.Tensor:
    """The model's inputs for some test images (binarised once with a fixed seed for 'dynamic')."""
    images = torch.from_numpy(test.images[np.asarray(indices, dtype=np.int64)])
    return eval_inputs(images, model(ck).meta.train_config.get("binarize", "none"))


@st.cache_data(max_entries=6, show_spinner="Encoding the test set…")
def _encoded(name: str, mtime: float, dataset: str, folder: str | None, root: str) -> np.ndarray:
    ck, test = Checkpoint(name, mtime), TestSet(dataset, *_test_arrays(dataset, folder, root))
    return ex.encode_means(model(ck), model_inputs(ck, test, np.arange(len(test))))


def encoded_test_set(ck: Checkpoint, test: TestSet) -> np.ndarray:
    """Posterior means mu of every test image: (N, latent_dim)."""
    return _encoded(ck.name, ck.mtime, test.name, data_dir(), str(data_root()))


@st.cache_data(max_entries=6)
def _pca(
    name: str, mtime: float, dataset: str, folder: str | None, root: str
) -> tuple[np.ndarray, np.ndarray]:
    return ex.pca_2d(_encoded(name, mtime, dataset, folder, root))


def map_projection(ck: Checkpoint, test: TestSet) -> tuple[np.ndarray, np.ndarray] | None:
    """For latent_dim > 2 the (mean, components) of the encoded test set's first two PCs; None for 2-D."""
    if model(ck).config.latent_dim == 2:
        return None
    return _pca(ck.name, ck.mtime, test.name, data_dir(), str(data_root()))


@st.cache_data(max_entries=6)
def _csv(name: str, mtime: float, dataset: str, folder: str | None, root: str) -> bytes:
    test = TestSet(dataset, *_test_arrays(dataset, folder, root))
    mu = _encoded(name, mtime, dataset, folder, root)
    frame = pd.DataFrame(mu, columns=[f"mu_{i}" for i in range(mu.shape[1])])
    frame.insert(0, "class", [test.classes[int(c)] for c in test.labels])
    frame.insert(0, "label", test.labels)
    return frame.to_csv(index_label="index").encode()


def test_set_csv(ck: Checkpoint, test: TestSet) -> bytes:
    """The encoded test set as CSV: index, label, class, mu_0 … mu_{D-1}."""
    return _csv(ck.name, ck.mtime, test.name, data_dir(), str(data_root()))


# ---------------------------------------------------------------- page frame, picker, model card


def page(title: str) -> Checkpoint:
    """Set up a page: config, navigation, checkpoint picker and model card in the sidebar."""
    st.set_page_config(page_title=f"{title} · VAE explorer", page_icon="🧭", layout="wide")
    # Latent images are 28×28: let the browser enlarge them with sharp pixels instead of blur.
    st.html("<style>img { image-rendering: pixelated; }</style>")
    with st.sidebar:
        for path, label in PAGES.items():
            st.page_link(path, label=label)
        st.divider()
        ck = pick_checkpoint()
        card_table(model(ck), compact=True)
    st.title(title)
    return ck


def _current_checkpoint(options: list[str]) -> str:
    """Deep link (?ckpt=), else this session's choice, else --checkpoint/$VAE_CHECKPOINT, else the default."""
    for candidate in (st.query_params.get("ckpt"), st.session_state.get("checkpoint"), startup_checkpoint()):
        if candidate in options:
            return candidate
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT in options else options[0]


def _on_pick() -> None:
    st.session_state["checkpoint"] = st.query_params["ckpt"] = st.session_state["_ckpt_widget"]


def pick_checkpoint() -> Checkpoint:
    """The sidebar picker; the choice lives in session_state['checkpoint'] and the `ckpt` query parameter."""
    options = checkpoint_options()
    if not options:
        st.error(
            "No checkpoints found under checkpoints/ or runs/. Train one: python -m vae_core train --help"
        )
        st.stop()
    current = _current_checkpoint(options)
    st.session_state["checkpoint"] = st.session_state["_ckpt_widget"] = st.query_params["ckpt"] = current
    st.selectbox("Checkpoint", options, key="_ckpt_widget", on_change=_on_pick)
    return checkpoint(current)


def checkpoint(name: str) -> Checkpoint:
    """A checkpoint by its shown name, loaded (and cached) once; stops the page with a message if it fails."""
    try:
        ck = Checkpoint(name, os.stat(resolve(name) / "model.pt").st_mtime)
        model(ck)
    except (OSError, CheckpointError) as e:
        st.error(f"Cannot load {name}: {e}")
        st.stop()
    return ck


def card(m: VAE) -> dict[str, str]:
    """The model card: what was trained on what, and how well it does on the test set."""
    metrics, train = m.meta.metrics, m.meta.train_config
    rows = {
        "dataset": m.meta.dataset,
        "architecture": f"{m.config.arch} ({m.config.activation})",
        "hidden": " × ".join(map(str, m.config.hidden)),
        "latent dim": str(m.config.latent_dim),
        "epochs": f"{m.meta.epoch} of {train.get('epochs', '?')}",
        "β · binarize": f"{train.get('beta', 1.0):g} · {train.get('binarize', '?')}",
    }
    if train.get("precision", "fp32") != "fp32":
        rows["training precision"] = f"{train['precision']} (mixed)"
    if "elbo" in metrics:
        rows["test ELBO (nats / image)"] = (
            f"{metrics['elbo']:.2f} = −({metrics['recon']:.2f} recon + {metrics['kl']:.2f} KL)"
        )
    if "nll" in metrics:
        rows["test NLL (nats / image)"] = f"{metrics['nll']:.2f} (IWAE, k = {metrics.get('nll_k', '?')})"
    if "active_units" in metrics:
        rows["active units"] = f"{metrics['active_units']} of {m.config.latent_dim}"
    return rows


def card_table(m: VAE, *, compact: bool = False) -> None:
    rows = card(m)
    if compact:
        st.markdown("\n".join(f"- **{k}**: {v}" for k, v in rows.items()))
    else:
        st.table(pd.DataFrame({"value": rows}))


# ---------------------------------------------------------------- query parameters


def from_query(key: str, default: object, cast: type = str, choices: tuple | list | None = None) -> None:
    """Seed widget `key` once per visit from the query parameter of the same name (else `default`)."""
    if key in st.session_state:
        return
    value = default
    if key in st.query_params:
        try:
            value = cast(st.query_params[key])
        except ValueError:
            value = default
        if choices is not None and value not in choices:
            value = default
    st.session_state[key] = value


def to_query(**params: object) -> None:
    """Keep a page's main settings in the URL so that the view can be shared and reopened."""
    st.query_params.update({k: str(v) for k, v in params.items()})


@contextmanager
def errors() -> Iterator[None]:
    """Show a bad setting or a failed computation as a message, never a traceback."""
    try:
        yield
    except (ValueError, RuntimeError, CheckpointError) as e:
        st.error(f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------- shared widgets and figures


def png(images: np.ndarray, nrow: int | None = None, *, scale: int = 1) -> bytes:
    """One image (H, W) or a batch (N, H, W) tiled `nrow` per row, as PNG bytes."""
    pixels = ex.to_pixels(images)
    return ex.to_png(pixels if nrow is None else ex.tile(pixels, nrow), scale=scale)


def image_row(images: np.ndarray, captions: list[str], *, width: int = 112) -> None:
    """Images side by side, each with its caption."""
    for column, image, caption in zip(st.columns(len(images)), images, captions, strict=True):
        with column:
            picture(png(image), caption=caption, width=width)


def kl_chart(kl_per_dim: list[float], *, title: str = "") -> alt.Chart:
    """KL per latent dimension as bars, inactive dimensions (KL < 1% of the largest) in grey."""
    _, inactive = ex.kl_order(kl_per_dim)
    frame = pd.DataFrame(
        {"dimension": range(len(kl_per_dim)), "KL (nats / image)": kl_per_dim, "inactive": inactive}
    )
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            x=alt.X("dimension:O"),
            y="KL (nats / image):Q",
            color=alt.Color(
                "inactive:N", scale=alt.Scale(domain=[False, True], range=["#4c78a8", "#bbbbbb"])
            ),
            tooltip=["dimension", "KL (nats / image)", "inactive"],
        )
        .properties(height=220)
    )


def test_image_picker(test: TestSet, key: str, *, default_class: int = 0) -> int:
    """Pick a test image by class and rank within it; returns its index in the test set."""
    names = ["any", *test.classes]
    from_query(f"{key}_class", names[default_class + 1], str, names)
    from_query(f"{key}_nth", 0, int)
    left, right = st.columns(2)
    chosen = left.selectbox("class", names, key=f"{key}_class")
    pool = np.arange(len(test)) if chosen == "any" else np.flatnonzero(test.labels == names.index(chosen) - 1)
    nth = right.number_input("image #", 0, max(len(pool) - 1, 0), key=f"{key}_nth")
    return int(pool[min(int(nth), len(pool) - 1)])


def _data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def _class_colorscale(k: int) -> list[list]:
    """A stepped colorscale: class c (as a number from 0 to k-1) gets PALETTE[c]."""
    steps = [PALETTE[c % len(PALETTE)] for c in range(k)]
    return [[edge, color] for c, color in enumerate(steps) for edge in (c / k, (c + 1) / k)]


def _points_traces(points: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """Encoded images as ONE WebGL trace coloured by class (one trace per class made every redraw
    slower), plus an empty trace per class for the legend."""
    k = max(len(classes), 1)
    marker = {
        "size": 4,
        "opacity": 0.6,
        "color": labels,
        "colorscale": _class_colorscale(k),
        "cmin": -0.5,
        "cmax": k - 0.5,
    }
    return [
        {
            "type": "scattergl",
            "x": points[:, 0],
            "y": points[:, 1],
            "mode": "markers",
            "showlegend": False,
            "name": "test images",
            "hoverinfo": "none",  # no label, but clicks still select the point
            "marker": marker,
        },
        *(
            {
                "type": "scattergl",
                "x": [None],
                "y": [None],
                "mode": "markers",
                "name": name,
                "marker": {"size": 8, "color": PALETTE[c % len(PALETTE)]},
            }
            for c, name in enumerate(classes)
        ),
    ]


def _grid_parts(grid: np.ndarray, axis: np.ndarray, spacing: str) -> tuple[dict, dict]:
    """A decoded grid as the map's background image, and a trace of invisible markers at the cell
    centres so that a click selects a cell (its customdata is the cell's z)."""
    centres = ex.to_display(axis, spacing)
    low, high = _edges(centres)
    image = {
        "source": _data_uri(grid_png(grid)),
        "xref": "x",
        "yref": "y",
        "x": low,
        "y": high,
        "sizex": high - low,
        "sizey": high - low,
        "sizing": "stretch",
        "layer": "below",
    }
    cx, cy = np.meshgrid(centres, centres)
    zx, zy = np.meshgrid(axis, axis)
    cells = {
        "type": "scatter",
        "x": cx.ravel(),
        "y": cy.ravel(),
        "customdata": np.stack([zx.ravel(), zy.ravel()], 1),
        "mode": "markers",
        "name": "grid cells",
        "showlegend": False,
        "marker": {"size": max(4, 360 // len(axis)), "opacity": 0.0, "symbol": "square"},
        "hovertemplate": "z = (%{customdata[0]:.2f}, %{customdata[1]:.2f})<extra></extra>",
    }
    return image, cells


def latent_map(
    *,
    grid: np.ndarray | None = None,
    axis: np.ndarray | None = None,
    spacing: str = "range",
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: tuple[str, ...] = (),
    path: np.ndarray | None = None,
    titles: tuple[str, str] = ("z[0]", "z[1]"),
) -> go.Figure:
    """A 2-D latent map in display coordinates: a decoded grid under the encoded test set and a path.

    The figure is written as one plain spec and validated once: building it call by call
    (add_trace, update_layout) cost more than decoding the grid.
    """
    traces, images = [], []
    axes = {"showgrid": False, "zeroline": False}
    if grid is not None:
        image, cells = _grid_parts(grid, axis, spacing)
        traces.append(cells)
        images.append(image)
        if spacing == "quantile":  # positions Φ(z), labelled with the z values themselves
            z = np.array([-2, -1, -0.5, 0, 0.5, 1, 2])
            axes |= {"tickvals": ex.to_display(z, "quantile"), "ticktext": [f"{v:g}" for v in z]}
    if points is not None:
        traces += _points_traces(points[:MAP_POINTS], labels[:MAP_POINTS], classes)
    if path is not None:
        traces.append(
            {
                "type": "scatter",
                "x": path[:, 0],
                "y": path[:, 1],
                "mode": "lines+markers",
                "name": "path",
                "line": {"color": "black", "width": 2},
                "marker": {"size": 7, "color": "black"},
            }
        )
    layout = {
        "images": images,
        "height": 640,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": {"itemsizing": "constant"},
        "xaxis": {"title": {"text": titles[0]}, **axes},
        "yaxis": {"title": {"text": titles[1]}, "scaleanchor": "x", **axes},
    }
    return go.Figure({"data": traces, "layout": layout})


def _edges(centres: np.ndarray) -> tuple[float, float]:
    """The outer edges of evenly spaced cells given their centres."""
    half = (centres[-1] - centres[0]) / (2 * max(len(centres) - 1, 1)) if len(centres) > 1 else 0.5
    return float(centres[0] - half), float(centres[-1] + half)


def csv_bytes(z: np.ndarray) -> bytes:
    """One latent vector or a batch as CSV with columns z_0 … z_{D-1}."""
    z = np.atleast_2d(z)
    buffer = io.StringIO()
    pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])]).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def random_indices(n: int, k: int, seed: int) -> np.ndarray:
    """k distinct indices below n, the same for the same seed."""
    return np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)


def bump(key: str) -> None:
    """Button callback: a new seed."""
    st.session_state[key] = int(st.session_state.get(key, 0)) + 1


def send_to_sliders(ck: Checkpoint, z: np.ndarray) -> None:
    """Make z the Sliders page's current point for this checkpoint."""
    set_z(ck, z)
    st.success(f"Sent z = ({', '.join(f'{v:.2f}' for v in z)}) to the sliders.")
    st.page_link("pages/2_Sliders.py", label="Open it on the Sliders page", icon=":material/tune:")


def dim_label(kl_per_dim: list[float] | None, inactive: np.ndarray) -> object:
    """A format_func for choosing a latent dimension: its index, KL and whether it is inactive."""

    def label(i: int) -> str:
        if not kl_per_dim:
            return f"z[{i}]"
        return f"z[{i}] · KL {kl_per_dim[i]:.2f}" + (" · inactive" if inactive[i] else "")

    return label


TEST_IMAGE = "test image (posterior mean)"
SOURCES = ("origin", "random prior sample", TEST_IMAGE)
ENCODED = "your digit (posterior mean)"  # a further source once the Encode page has encoded a digit
ENDPOINTS = {"A": "a", "B": "b"}  # the Interpolate page's two endpoints and their latent_input keys


def set_endpoint(end: str, test_index: int | None = None) -> None:
    """Make the Interpolate page's endpoint `end` ("A" or "B") test image `test_index`, or the
    digit encoded on the Encode page when no index is given (its widgets pick it up when next drawn)."""
    key = ENDPOINTS[end]
    if test_index is None:
        st.session_state[key] = ENCODED
        return
    st.session_state[key] = TEST_IMAGE
    st.session_state[f"{key}_img_class"] = "any"
    st.session_state[f"{key}_img_nth"] = int(test_index)


def remember_encoded(ck: Checkpoint, mu: np.ndarray) -> None:
    """Offer the posterior mean of a digit encoded on the Encode page as a source on the other pages."""
    st.session_state["encoded_digit"] = {"ckpt": ck.name, "mu": [float(v) for v in mu]}


def encoded(ck: Checkpoint) -> np.ndarray | None:
    """The last encoded digit's posterior mean under this checkpoint, if any."""
    digit = st.session_state.get("encoded_digit")
    return np.asarray(digit["mu"], np.float32) if digit and digit["ckpt"] == ck.name else None


def latent_input(
    ck: Checkpoint,
    test: TestSet | None,
    key: str,
    *,
    sources: tuple[str, ...] = SOURCES,
    default_class: int = 0,
) -> np.ndarray:
    """A latent point chosen by the user: the origin, a prior sample, a test image or an encoded digit."""
    sources = tuple(s for s in sources if test is not None or s != TEST_IMAGE)
    default = sources[-1] if test is not None else sources[0]
    mine = encoded(ck)
    sources = (*sources, ENCODED) if mine is not None else sources
    if st.session_state.get(key, default) not in sources:
        del st.session_state[key]  # e.g. your digit, chosen under another checkpoint
    from_query(key, default, str, sources)
    source = st.radio(key, sources, key=key, horizontal=True, label_visibility="collapsed")
    if source == ENCODED:
        return mine
    if source == "random prior sample":
        from_query(f"{key}_seed", default_class, int)
        seed = st.number_input("seed", 0, 10**6, key=f"{key}_seed")
        return ex.sample_prior(model(ck), 1, seed=seed)[0]
    if source == TEST_IMAGE:
        return encoded_test_set(ck, test)[test_image_picker(test, f"{key}_img", default_class=default_class)]
    return origin(model(ck))


def origin(m: VAE) -> np.ndarray:
    return np.zeros(m.config.latent_dim, np.float32)


def grid_png(images: np.ndarray, *, scale: int = 1) -> bytes:
    """A decoded grid (rows, cols, H, W) as one tiled PNG."""
    rows, cols = images.shape[:2]
    return png(images.reshape(rows * cols, *images.shape[2:]), cols, scale=scale)


Z_KEY = "zs_{}"  # the Sliders page's widget of each latent dimension


def set_z(ck: Checkpoint, z: np.ndarray) -> None:
    """Make z the current point of the Sliders page (its widgets pick it up when next drawn)."""
    st.session_state["z"] = [round(float(np.clip(v, -5, 5)), 3) for v in z]
    st.session_state["z_ckpt"] = ck.name
    for i, v in enumerate(st.session_state["z"]):
        st.session_state[Z_KEY.format(i)] = v


def current_z(ck: Checkpoint) -> list[float]:
    """The Sliders page's point: this session's, else the `z` query parameter, else the origin."""
    latent_dim = model(ck).config.latent_dim
    if st.session_state.get("z_ckpt") != ck.name or len(st.session_state.get("z", [])) != latent_dim:
        try:
            z = [float(v) for v in st.query_params.get("z", "").split(",")]
        except ValueError:
            z = []
        set_z(ck, z if len(z) == latent_dim else origin(model(ck)))
    for i, v in enumerate(st.session_state["z"]):
        st.session_state.setdefault(Z_KEY.format(i), v)
    return st.session_state["z"]


def cards_frame(models: dict[str, VAE]) -> pd.DataFrame:
    """Model cards as one table, one column per model; a row a model lacks shows a dash."""
    return pd.DataFrame({name: card(m) for name, m in models.items()}).fillna("—")


def picture(data: bytes, *, caption: str | None = None, width: int | str = "content") -> None:
    """st.image that keeps our PNG bytes as they are (Streamlit's "auto" would re-encode them as JPEG)."""
    st.image(data, caption=caption, width=width, output_format="PNG")
