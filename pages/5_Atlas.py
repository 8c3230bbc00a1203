"""Atlas: where the data lives in latent space. The test set's posterior means projected to 2-D (PCA,
UMAP, t-SNE, or the latent plane of a 2-D model), images on hover, selections, and decoding anywhere."""

import numpy as np
import pandas as pd
import streamlit as st

from explorer import figures, loaders, meta, state, widgets
from vae_core import explore as ex
from vae_core import projection as pj

LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE", "latent": "latent plane"}
AXES = {
    "pca": ("PC 1", "PC 2"),
    "umap": ("UMAP 1", "UMAP 2"),
    "tsne": ("t-SNE 1", "t-SNE 2"),
    "latent": ("z[0]", "z[1]"),
}
GRID = 40  # cells per side of the invisible decode lattice: hover shows, a click decodes, its location
SHOWN = 24  # selected images shown at once
POLL_S = 1.0  # how often the progress of a map computing in the background is re-read

pj.warm_up_umap()  # idempotent; compiles numba in the background if app start has not already
ck = widgets.page("Atlas")
model = loaders.model(ck)
test = widgets.test_set(model)
if test is None:
    st.stop()
st.html("<style>#vg-tooltip-element img { width: 112px; height: 112px; image-rendering: pixelated; }</style>")


# ---------------------------------------------------------------- controls


def controls() -> tuple[str, int, dict, str]:
    """Method, seed, its parameters and the split, from widgets seeded by the URL."""
    methods = [m for m in pj.METHODS if m != "latent" or model.config.latent_dim == 2]
    method = state.choice(
        st.radio,
        "projection",
        methods,
        key="atlas_method",
        default="latent" if "latent" in methods else "umap",
        format_func=LABELS.get,
        horizontal=True,
    )
    seed = state.number_input(
        "seed", 0, state.MAX_SEED, key="atlas_seed", default=0, help="the same seed gives the same map"
    )
    params = {}
    if method == "umap":
        params["n_neighbors"] = state.slider("UMAP n_neighbors", 2, 100, key="atlas_n_neighbors", default=15)
        params["min_dist"] = state.slider(
            "UMAP min_dist", 0.0, 0.99, key="atlas_min_dist", default=0.1, step=0.01
        )
        params["n_epochs"] = state.slider("UMAP epochs", 50, 500, key="atlas_n_epochs", default=200, step=50)
    if method == "tsne":
        params["perplexity"] = float(
            state.slider("t-SNE perplexity", 5, 100, key="atlas_perplexity", default=30)
        )
    train = state.toggle(
        f"also the first {loaders.TRAIN_POINTS:,} training images (grey)",
        key="atlas_train",
        default=False,
        wrap=True,  # a narrow settings column would cut the label off
    )
    shown = {f"atlas_{k}": v for k, v in params.items()} | {"atlas_train": train}
    state.to_url(atlas_method=method, atlas_seed=seed, **shown)
    return method, int(seed), params, "test+train" if train else "test"


def compute_map(method: str, seed: int, params: dict, split: str) -> pj.Projection:
    """The map, or while a slow one computes in the background, the PCA map and its progress."""
    if method in ("umap", "tsne") and not loaders.is_projected(ck, split, method, seed, params):
        job = loaders.map_job(ck, test, split, method, seed, params)
        if job.state is not loaders.JobState.DONE:
            map_progress(job, LABELS[method], (split, method, seed, params))
            return loaders.projection(ck, test, split)
    return loaders.projection(ck, test, split, method, seed, params)


@st.fragment(run_every=POLL_S)
def map_progress(job: loaders.MapJob, label: str, which: tuple) -> None:
    """How far the background map is, re-read every POLL_S seconds; the page redraws once it is done."""
    if job.state is loaders.JobState.DONE:
        st.rerun(scope="app")
    if job.state is loaders.JobState.RUNNING:
        st.progress(job.fraction, text=f"Computing the {label} map: {job.fraction:.0%} (PCA shown meanwhile; "
                    "you may switch or leave, it goes on and is kept on disk)")  # fmt: skip
        st.button("Cancel", key="atlas_cancel", on_click=job.cancel, icon=":material/cancel:")
        return
    st.warning(f"The {label} map was {job.state}. {widgets.plain(job.message)}", icon=":material/block:")
    if st.button(f"Compute the {label} map again", key="atlas_again"):
        loaders.map_job(ck, test, *which, again=True)
        st.rerun(scope="app")


# ---------------------------------------------------------------- the chart


def frame(coords: np.ndarray, n_marked: int = 0) -> pd.DataFrame:
    """One row per test image: map position, class, scores, thumbnail, and whether it is highlighted."""
    s, uris = loaders.scores(ck, test), loaders.thumbnails(test)
    n = len(test)
    marked = np.full(n, "", object)
    marked[pj.worst(-s["elbo"], n_marked)] = "least likely (lowest ELBO)"
    marked[pj.worst(s["recon"], n_marked)] = "worst reconstructed"
    return pd.DataFrame({
        "x": coords[:n, 0], "y": coords[:n, 1], "index": np.arange(n),
        "class": np.asarray(test.classes)[test.labels], "ELBO (nats)": s["elbo"].astype(float).round(1),
        "recon (nats)": s["recon"].astype(float).round(1), "image": uris, "marked": marked,
    })  # fmt: skip


def chart(points: pd.DataFrame, cells: pd.DataFrame | None, train=None, method: str = "pca"):
    return figures.atlas_chart(points, cells, classes=test.classes, titles=AXES[method], train=train)


# ---------------------------------------------------------------- selection, decoding, highlights


def remember(event: object, coords: np.ndarray, map_key: str) -> None:
    """A new box or click on the map replaces session_state['atlas_picked'] (test-set indices);
    a click on empty space becomes the position to decode, on this map only."""
    selection = dict(event.selection) if event else {}
    if repr(selection) == st.session_state.get("_atlas_event"):
        return
    st.session_state["_atlas_event"] = repr(selection)
    box = selection.get("box") or {}
    picks = [int(p["index"]) for p in selection.get("pick") or [] if "index" in p]  # a cleared pick is {}
    cells = [c for c in selection.get("cell") or [] if "cx" in c]
    if box.get("x") and box.get("y"):
        st.session_state["atlas_picked"] = pj.in_box(coords[: len(test)], box["x"], box["y"]).tolist()
    elif picks:
        st.session_state["atlas_picked"] = picks
    if cells:
        state.set_decode_position(map_key, [float(cells[-1]["cx"]), float(cells[-1]["cy"])])


def selection_panel() -> None:
    picked = st.session_state.get("atlas_picked", [])
    st.subheader(f"Selected: {len(picked)} test images")
    if not picked:
        st.caption("Drag a box over the map, or click a point (shift-click adds more).")
        return
    s, shown = loaders.scores(ck, test), np.asarray(picked[:SHOWN])
    x = loaders.model_inputs(ck, test, shown)
    x_hat, _ = ex.reconstruct(model, x)
    widgets.picture(
        widgets.png(ex.to_images(x), 12), caption=f"originals (first {len(shown)})", width="stretch"
    )
    widgets.picture(
        widgets.png(x_hat, 12), caption="reconstructions (decoded posterior means)", width="stretch"
    )
    table = {"index": shown, "class": np.asarray(test.classes)[test.labels[shown]]}
    table |= {"ELBO (nats / image)": s["elbo"][shown], "recon (nats)": s["recon"][shown]}
    table |= {"KL (nats)": s["kl"][shown]}
    st.dataframe(pd.DataFrame(table), hide_index=True)  # as tall as its rows (up to ten, then it scrolls)
    label = lambda i: f"#{i} · {test.classes[test.labels[i]]}"  # noqa: E731
    chosen = st.selectbox("send one of them", picked, format_func=label, key="atlas_send")
    left, middle, right = st.columns(3)
    middle.button("as interpolation start A", on_click=state.set_endpoint, args=("A", chosen), wrap=True)
    right.button("as interpolation end B", on_click=state.set_endpoint, args=("B", chosen), wrap=True)
    if left.button("to the sliders", type="primary", wrap=True):
        widgets.send_to_sliders(ck, s["mu"][chosen])


def decode_panel(projection: pj.Projection, map_key: str) -> None:
    st.subheader("Decoded where you clicked")
    where = state.decode_position(map_key)
    if where is None:
        st.caption(
            "Hover anywhere on the map to preview the decoded image; click empty space to decode it here."
        )
        return
    z = projection.inverse([where])[0]
    widgets.picture(widgets.png(ex.decode_images(model, z)[0], scale=6), width=168,
                    caption=f"map position ({where[0]:.2f}, {where[1]:.2f})")  # fmt: skip
    how = ("the exact inverse of the projection" if projection.exact_inverse else
           f"{LABELS[projection.method]} has no inverse: the distance-weighted mean latent of the "
           f"{pj.INVERSE_K} nearest points")  # fmt: skip
    st.caption(f"z = {how}.")
    if st.button("Send this z to the sliders"):
        widgets.send_to_sliders(ck, z)


def highlights(n: int) -> None:
    s = loaders.scores(ck, test)
    for title, values in (("Worst reconstructed: recon", s["recon"]), ("Least likely: −ELBO", -s["elbo"])):
        order = pj.worst(values, n)
        st.markdown(f"**{title}** (nats / image under each)")
        captions = [f"#{i}: {values[i]:.0f}" for i in order]
        widgets.image_strip(ex.to_images(loaders.model_inputs(ck, test, order)), captions, width=56)


# ---------------------------------------------------------------- the page


@st.fragment
def atlas() -> None:
    settings, view = st.columns([1, 3])
    with settings:
        method, seed, params, split = controls()
        n_marked = state.slider("highlight the N worst", 0, 50, key="atlas_marked", default=10)
        state.to_url(atlas_marked=n_marked)
        st.button(
            "Clear the selection", on_click=st.session_state.pop, args=("atlas_picked", None), wrap=True
        )
    projection = None  # stays None if the map fails (the error is shown in its place)
    map_key = loaders.projection_key(ck, split, method, seed, params)
    with view, widgets.errors():
        projection = compute_map(method, seed, params, split)  # a slow map's progress goes above it
        holder = st.empty()
        if projection.method != method:  # PCA stands in while the slow map computes
            method, seed, params = "pca", 0, {}
        map_key = loaders.projection_key(ck, split, method, seed, params)  # the map shown, for clicks
        coords = projection.coords
        cells = loaders.lattice(ck, test, split, method, seed, params, GRID)
        train = coords[len(test) :] if split == "test+train" else None
        event = holder.altair_chart(
            chart(frame(coords, n_marked), cells, train, method),
            on_select="rerun",
            key="atlas_map",
            width="stretch",
        )
        st.caption(
            f"{len(test):,} test images ({meta.dataset_label(model)}), posterior means projected by "
            f"{LABELS[method]}, "
            f"seed {seed}. Hover a point for its image, empty space for the image decoded there."
        )
        remember(event, coords, map_key)
    left, right = st.columns([3, 1])
    with left, widgets.errors():
        selection_panel()
    with right, widgets.errors():
        if projection is not None:
            decode_panel(projection, map_key)
    if n_marked:
        highlights(min(n_marked, 12))


atlas()
