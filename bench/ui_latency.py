"""Server-side latency of the explorer's interactive fragments, from a widget change to a new image.

For random settings it times what the Sliders and Latent grid fragments compute on a rerun: the
vae_core calls, the PNG encoding, the eager CSV download (PNG and GIF downloads are built on click)
and, for the grid, the Plotly figure with the encoded test set, serialised as st.plotly_chart does.
Browser rendering and the websocket are not included. Prints p50 / p95 in milliseconds.

Two more lines check that model against Streamlit itself: AppTest reruns the whole Sliders or Latent
grid page (sidebar and model card included, so an upper bound on a fragment rerun) for random moves.
AppTest compiles the page anew on every run, which a server does once; the bench gives it one shared
script cache, as the server has.

The models, timed in one run, alternating setting by setting and each given the same settings:
`--checkpoint` (mnist-2d: the app's default, with its encoded test set under the grid); `--reference`
(mnist-best) as PyTorch and as its ONNX export (`vae_core.onnx_model.export_onnx`, what `python -m
vae_core export --onnx` writes), with the ONNX / PyTorch ratio of each p95; and a 64x64 colour conv
model with random weights, the emoji model's architecture (`--arch conv --hidden 32 64 --latent-dim 32
--likelihood logistic`, which sets the cost, not the weights). The built models live in a temporary
folder, opened as runs. Models load as the app loads them (`explorer.loaders.model`), and grids span
the sizes the page offers for the model's images (`explorer.widgets.max_grid_side`).

It measures the steady state: the app compiles UMAP's numba kernels in a background thread for about
30 s after the server starts (`explorer.loaders.start_once`), and that thread is not started here.
While it runs it competes for the interpreter lock, and the grid's p95 more than doubles.

    python bench/ui_latency.py [--checkpoint checkpoints/mnist-2d] [--reference checkpoints/mnist-best]
                               [--settings 100] [--only checkpoint|reference]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.io
import plotly.tools
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the app's helper package lives at the root
os.environ.setdefault("VAE_WARM_UP_UMAP", "0")  # before the app's start-up hook runs: see the docstring

from explorer import figures, loaders, paths, widgets
from explorer.paths import Checkpoint
from vae_core import (
    VAE,
    DatasetError,
    DataSpec,
    RunSpec,
    VAEConfig,
    eval_inputs,
    load_checkpoint,
    load_images,
)
from vae_core import explore as ex
from vae_core import onnx_model as om
from vae_core.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
STEPS = (
    "slider -> decoded image",
    "grid control -> grid + map",
    "slider, whole page",
    "grid control, whole page",
)
WARM_UP = 5  # settings run before timing starts, per step and model
COLOUR_CONFIG = VAEConfig(
    arch="conv", hidden=(32, 64), latent_dim=32, likelihood="logistic", image_shape=(3, 64, 64)
)


def slider_step(model, rng: np.random.Generator) -> None:
    z = rng.uniform(-3, 3, model.config.latent_dim)
    image = ex.decode_images(model, z)[0]
    widgets.png(image), widgets.csv_bytes(z)  # the PNG download is built only when clicked


def grid_step(
    model, rng: np.random.Generator, mu: np.ndarray | None, labels: np.ndarray | None, classes
) -> None:
    n = int(rng.integers(widgets.GRID_SIDES[0], widgets.max_grid_side(model.config.image_shape) + 1))
    spacing = str(rng.choice(ex.SPACINGS))
    extent = float(rng.uniform(0.5, 0.99) if spacing == "quantile" else rng.uniform(0.5, 6.0))
    images, axis = ex.latent_grid(model, n, spacing=spacing, extent=extent)
    points = None if mu is None else ex.to_display(mu, spacing)
    fig = figures.latent_map(
        grid=images, axis=axis, spacing=spacing, points=points, labels=labels, classes=classes
    )
    plotly.io.to_json(
        plotly.tools.return_figure_from_figure_or_data(fig, True), validate=False
    )  # as st.plotly_chart


def grid_page_step(at, rng: np.random.Generator, most: int) -> None:
    """One grid control changed in the real Latent grid page (up to `most` cells a side), rerun by
    Streamlit (AppTest)."""
    if rng.random() < 0.5:
        at.slider(key="n").set_value(int(rng.integers(widgets.GRID_SIDES[0], most + 1)))
    else:
        at.radio(key="spacing").set_value(str(rng.choice(ex.SPACINGS)))
    rerun(at)


def sliders_page_step(at, rng: np.random.Generator) -> None:
    """One latent slider moved in the real Sliders page, rerun by Streamlit (AppTest)."""
    sliders = [s for s in at.slider if str(s.key).startswith("zs_")]
    sliders[int(rng.integers(len(sliders)))].set_value(round(float(rng.uniform(-3, 3)), 2))
    rerun(at)


def rerun(at) -> None:
    at.run()
    if at.exception:
        raise RuntimeError(at.exception[0].value)


def open_page(checkpoint: str, page: str):
    """`page` in AppTest, opened on `checkpoint`, with one script cache shared across reruns."""
    import streamlit.testing.v1.app_test as app_test
    import streamlit.testing.v1.local_script_runner as local_script_runner
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import AppTest

    shared = ScriptCache()
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["ckpt"] = checkpoint
    at.run()
    at.switch_page(page)
    rerun(at)
    return at


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


@dataclass
class Subject:
    """One model under test: what it is called in the table, the model, and its two open pages."""

    name: str
    model: object
    mu: np.ndarray | None = None  # the encoded test set under a 2-D model's grid
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    pages: dict = field(default_factory=dict)

    def steps(self, rng: np.random.Generator) -> dict[str, Callable[[], None]]:
        most = widgets.max_grid_side(self.model.config.image_shape)
        return {
            "slider -> decoded image": lambda: slider_step(self.model, rng),
            "grid control -> grid + map": lambda: grid_step(
                self.model, rng, self.mu, self.labels, self.classes
            ),
            "slider, whole page": lambda: sliders_page_step(self.pages["sliders"], rng),
            "grid control, whole page": lambda: grid_page_step(self.pages["grid"], rng, most),
        }


def subject(name: str, checkpoint: str) -> Subject:
    """A model loaded as the app loads it, its test set encoded under a 2-D grid, its pages opened."""
    folder = Path(checkpoint).resolve()
    shown = paths.shown(folder)  # as the picker and the deep link name it
    model = loaders.model(Checkpoint(shown, loaders.folder_mtime(folder)))  # the pages' own copy
    s = Subject(name, model)
    if model.config.latent_dim == 2:
        try:
            test = load_images(model.meta.dataset, "test", download=False)
            s.mu = ex.encode_means(model, eval_inputs(test, model.meta.spec.data.binarize))
            s.labels, s.classes = test.labels.numpy(), test.classes
        except DatasetError:
            print(f"(no test set for {name}: its grid is timed without the encoded test set)")
    s.pages = {
        "sliders": open_page(shown, "pages/2_Sliders.py"),
        "grid": open_page(shown, "pages/1_Latent_grid.py"),
    }
    return s


def colour_checkpoint(folder: Path) -> Path:
    """A 64x64 colour conv model with seeded random weights: the emoji model's architecture, which is
    what sets the latency (`--arch conv --hidden 32 64 --latent-dim 32 --likelihood logistic`)."""
    torch.manual_seed(0)
    model = VAE(COLOUR_CONFIG).eval()
    data = DataSpec(name="folder", binarize="none", image_size=64, channels=3)
    folder.mkdir(parents=True)
    save_checkpoint(folder, model, spec=RunSpec(data=data, model=COLOUR_CONFIG), metrics={}, epoch=0, step=0)
    return folder


def onnx_copy(checkpoint: str, folder: Path) -> Path:
    """An ONNX export of `checkpoint`, written as `python -m vae_core export --onnx` writes it."""
    return om.export_onnx(load_checkpoint(checkpoint), folder, name=Path(checkpoint).name)


def measure(subjects: list[Subject], settings: int) -> dict[tuple[str, str], list[float]]:
    """Milliseconds of each step on each model, the models alternating setting by setting; every model
    sees the same sequence of random settings (one generator each, same seed)."""
    times: dict[tuple[str, str], list[float]] = {}
    for step in STEPS:
        runs = [(s.name, s.steps(np.random.default_rng(0))[step]) for s in subjects]
        for i in range(WARM_UP + settings):
            for name, run in runs:
                start = time.perf_counter()
                run()
                if i >= WARM_UP:
                    times.setdefault((name, step), []).append((time.perf_counter() - start) * 1000)
    return times


def report(times: dict[tuple[str, str], list[float]], names: list[str], pair: tuple[str, str] | None) -> None:
    """p50 / p95 of every step on every model, then the p95 ratio of the pair (ONNX, its PyTorch model)."""
    for step in STEPS:
        for name in names:
            p50, p95 = percentiles(times[name, step])
            print(f"{step:28s} {name:22s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    for step in STEPS if pair else ():
        onnx, reference = (percentiles(times[name, step])[1] for name in pair)
        print(f"{step:28s} {pair[0]} / {pair[1]} p95: {onnx / reference:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist-2d")
    parser.add_argument(
        "--reference",
        default="checkpoints/mnist-best",
        help="timed beside its ONNX export and a colour model",
    )
    parser.add_argument("--settings", type=int, default=100)
    parser.add_argument("--only", choices=("checkpoint", "reference"), help="time one group of models only")
    args = parser.parse_args()
    loaders.start_once()  # as the app does on its first page view: one torch thread per call
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp).resolve()
        os.environ["VAE_RUNS_DIR"] = str(built)  # the picker lists runs: the built models open by deep link
        subjects, pair = [], None
        if args.only != "reference":
            subjects.append(subject(Path(args.checkpoint).name, args.checkpoint))
        if args.only != "checkpoint":
            name = Path(args.reference).name
            pair = f"{name} ONNX", f"{name} PyTorch"
            subjects += [
                subject(pair[1], args.reference),
                subject(pair[0], str(onnx_copy(args.reference, built / f"{name}-onnx"))),
                subject("colour 64x64 conv", str(colour_checkpoint(built / "colour-64"))),
            ]
        print(f"{args.settings} settings per step and model, the models alternating")
        report(measure(subjects, args.settings), [s.name for s in subjects], pair)


if __name__ == "__main__":
    main()
