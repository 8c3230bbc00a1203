"""Server-side latency of the explorer's interactive fragments, from a widget change to a new image.

For 200 random settings it times what the Sliders and Latent grid fragments compute on a rerun: the
vae_core calls, the PNG encoding, the eager CSV download (PNG and GIF downloads are built on click)
and, for the grid, the Plotly figure with the encoded test set, serialised as st.plotly_chart does.
Browser rendering and the websocket are not included. Prints p50 / p95 in milliseconds.

Two more lines check that model against Streamlit itself: AppTest reruns the whole Sliders or Latent
grid page (sidebar and model card included, so an upper bound on a fragment rerun) for random moves.
AppTest compiles the page anew on every run, which a server does once; the bench gives it one shared
script cache, as the server has.

It measures the steady state: the app compiles UMAP's numba kernels in a background thread for about
30 s after the server starts (`explorer.loaders.start_once`), and that thread is not started here.
While it runs it competes for the interpreter lock, and the grid's p95 more than doubles.

    python bench/ui_latency.py [--checkpoint checkpoints/mnist-2d] [--settings 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import plotly.io
import plotly.tools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the app's helper package lives at the root
os.environ.setdefault("VAE_WARM_UP_UMAP", "0")  # before the app's start-up hook runs: see the docstring

from explorer import figures, loaders, widgets
from vae_core import DatasetError, eval_inputs, load_checkpoint, load_images
from vae_core import explore as ex

ROOT = Path(__file__).resolve().parent.parent


def slider_step(model, rng: np.random.Generator) -> None:
    z = rng.uniform(-3, 3, model.config.latent_dim)
    image = ex.decode_images(model, z)[0]
    widgets.png(image), widgets.csv_bytes(z)  # the PNG download is built only when clicked


def grid_step(
    model, rng: np.random.Generator, mu: np.ndarray | None, labels: np.ndarray | None, classes
) -> None:
    n = int(rng.integers(2, 31))
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


def grid_page_step(at, rng: np.random.Generator) -> None:
    """One grid control changed in the real Latent grid page, rerun by Streamlit (AppTest)."""
    if rng.random() < 0.5:
        at.slider(key="n").set_value(int(rng.integers(2, 31)))
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


def percentiles(step, settings: int) -> tuple[float, float]:
    times = []
    for _ in range(settings):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist-2d")
    parser.add_argument("--settings", type=int, default=200)
    args = parser.parse_args()
    loaders.start_once()  # as the app does on its first page view: one torch thread per call
    model = load_checkpoint(args.checkpoint)
    mu = labels = None
    classes: tuple[str, ...] = ()
    if model.config.latent_dim == 2:
        try:
            test = load_images(model.meta.dataset, "test", download=False)
            mu = ex.encode_means(model, eval_inputs(test, model.meta.spec.data.binarize))
            labels, classes = test.labels.numpy(), test.classes
        except DatasetError:
            print("(no test set: the grid is timed without the encoded test set)")
    rng = np.random.default_rng(0)
    sliders = open_page(args.checkpoint, "pages/2_Sliders.py")
    grid = open_page(args.checkpoint, "pages/1_Latent_grid.py")
    for name, step in (
        ("slider -> decoded image", lambda: slider_step(model, rng)),
        ("grid control -> grid + map", lambda: grid_step(model, rng, mu, labels, classes)),
        ("slider, whole page", lambda: sliders_page_step(sliders, rng)),
        ("grid control, whole page", lambda: grid_page_step(grid, rng)),
    ):
        percentiles(step, 5)  # warm-up
        p50, p95 = percentiles(step, args.settings)
        print(
            f"{name:28s} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms  ({args.settings} settings, {args.checkpoint})"
        )


if __name__ == "__main__":
    main()
