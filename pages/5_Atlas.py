"""Atlas: where the data lives in latent space. The test set's posterior means projected to 2-D (PCA,
UMAP, t-SNE, or the latent plane of a 2-D model), images on hover, selections, and decoding anywhere."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import explorer as ui
from vae_core import explore as ex
from vae_core import load_images
from vae_core import projection as pj

LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE", "latent": "latent plane"}
AXES = {
    "pca": ("PC 1", "PC 2"),
    "umap": ("UMAP 1", "UMAP 2"),
    "tsne": ("t-SNE 1", "t-SNE 2"),
    "latent": ("z[0]", "z[1]"),
}
GRID = 40  # cells per side of the invisible decode lattice: hover shows, a click decodes, its location
TRAIN_POINTS = 10_000  # training images placed on the map (transformed, not fitted) when asked for
SHOWN = 24  # selected images shown at once

pj.warm_up_umap()  # idempotent; compiles numba in the background if app start has not already
ck = ui.page("Atlas")
model = ui.model(ck)
test = ui.test_set(model.meta.dataset)
if test is None:
    st.stop()
st.html("<style>#vg-tooltip-element img { width: 112px; height: 112px; image-rendering: pixelated; }</style>")


# ---------------------------------------------------------------- cached computations (disk, then memory)


@st.cache_data(max_entries=4, show_spinner=False)
def _train_images(dataset: str, folder: str | None) -> np.ndarray:
    return load_images(dataset, "train", data_dir=folder, download=False).images[:TRAIN_POINTS].numpy()


@st.cache_data(max_entries=8, show_spinner=False)
def scores(name: str, mtime: float, split: str) -> dict[str, np.ndarray]:
    """Posterior means and per-image ELBO terms of a split, from the disk cache when there."""
    key = pj.cache_key(ui.resolve(name), split, "scores")
    images = test.images if split == "test" else _train_images(test.name, ui.data_dir())
    return pj.cached(key, lambda: pj.encode_scores(ui.load_model(name, mtime), images))


def projection_key(split: str, method: str, seed: int, params: dict) -> str:
    return pj.cache_key(ck.path, split, method, seed=seed, **params)


@st.cache_data(max_entries=16, show_spinner=False)
def projection_arrays(name: str, mtime: float, split: str, method: str, seed: int, params: dict) -> dict:
    mu = scores(name, mtime, "test")["mu"]
    extra = scores(name, mtime, "train")["mu"] if split == "test+train" else None
    compute = lambda: pj.project(mu, method, seed=seed, extra=extra, **params).arrays()  # noqa: E731
    return pj.cached(projection_key(split, method, seed, params), compute)


@st.cache_data(max_entries=2, show_spinner=False)
def thumbnails(dataset: str) -> np.ndarray:
    return pj.cached(f"thumbnails|{dataset}|{len(test)}", lambda: {"uri": pj.data_uris(test.images)})["uri"]


# ---------------------------------------------------------------- controls


def controls() -> tuple[str, int, dict, str]:
    """Method, seed, its parameters and the split, from widgets seeded by the URL."""
    methods = [m for m in pj.METHODS if m != "latent" or model.config.latent_dim == 2]
    ui.from_query("atlas_method", "latent" if "latent" in methods else "umap", str, methods)
    method = st.radio("projection", methods, key="atlas_method", format_func=LABELS.get, horizontal=True)
    ui.from_query("atlas_seed", 0, int)
    seed = st.number_input("seed", 0, 10**6, key="atlas_seed", help="the same seed gives the same map")
    params = {}
    if method == "umap":
        ui.from_query("atlas_n_neighbors", 15, int)
        ui.from_query("atlas_min_dist", 0.1, float)
        params["n_neighbors"] = st.slider("UMAP n_neighbors", 2, 100, key="atlas_n_neighbors")
        params["min_dist"] = st.slider("UMAP min_dist", 0.0, 0.99, step=0.01, key="atlas_min_dist")
        ui.from_query("atlas_n_epochs", 200, int)
        params["n_epochs"] = st.slider("UMAP epochs", 50, 500, step=50, key="atlas_n_epochs")
    if method == "tsne":
        ui.from_query("atlas_perplexity", 30, int)
        params["perplexity"] = float(st.slider("t-SNE perplexity", 5, 100, key="atlas_perplexity"))
    train = method != "tsne" and st.toggle(
        f"also the first {TRAIN_POINTS:,} training images", key="atlas_train"
    )
    ui.to_query(atlas_method=method, atlas_seed=seed, **{f"atlas_{k}": v for k, v in params.items()})
    return method, int(seed), params, "test+train" if train else "test"


def compute_map(method: str, seed: int, params: dict, split: str, holder) -> dict:
    """The map's arrays; while a slow one computes, PCA stands in and a status box shows progress."""
    if method in ("umap", "tsne") and not pj.is_cached(projection_key(split, method, seed, params)):
        preview = projection_arrays(ck.name, ck.mtime, "test", "pca", 0, {})
        holder.altair_chart(chart(frame(preview["coords"]), None), width="stretch")
        with st.status(f"Computing the {LABELS[method]} map (PCA shown meanwhile)…") as status:
            if method == "umap" and pj.warm_up_umap().is_alive():
                status.update(label="Compiling UMAP (once after the app starts), then computing the map…")
                pj.warm_up_umap().join()
            arrays = projection_arrays(ck.name, ck.mtime, split, method, seed, params)
            status.update(
                label=f"{LABELS[method]} map ready (cached on disk for next time)", state="complete"
            )
        return arrays
    return projection_arrays(ck.name, ck.mtime, split, method, seed, params)


# ---------------------------------------------------------------- the chart


def frame(coords: np.ndarray, n_marked: int = 0) -> pd.DataFrame:
    """One row per test image: map position, class, scores, thumbnail, and whether it is highlighted."""
    s = scores(ck.name, ck.mtime, "test")
    n = len(test)
    marked = np.full(n, "", object)
    marked[pj.worst(-s["elbo"], n_marked)] = "least likely (lowest ELBO)"
    marked[pj.worst(s["recon"], n_marked)] = "worst reconstructed"
    return pd.DataFrame({
        "x": coords[:n, 0], "y": coords[:n, 1], "index": np.arange(n),
        "class": np.asarray(test.classes)[test.labels], "ELBO (nats)": s["elbo"].astype(float).round(1),
        "recon (nats)": s["recon"].astype(float).round(1), "image": thumbnails(test.name), "marked": marked,
    })  # fmt: skip


@st.cache_data(max_entries=8, show_spinner=False)
def lattice(name: str, mtime: float, split: str, method: str, seed: int, params: dict) -> pd.DataFrame:
    """GRID × GRID cells over the map, each with the image decoded at its centre (for hover and click)."""
    arrays = projection_arrays(name, mtime, split, method, seed, params)
    cells = pj.lattice(arrays["coords"], GRID)
    z = current_projection(arrays, method, split).inverse(np.stack([cells["cx"], cells["cy"]], 1))
    position = [f"({x:.2f}, {y:.2f})" for x, y in zip(cells["cx"], cells["cy"], strict=True)]
    return pd.DataFrame(
        {**cells, "image": pj.data_uris(ex.decode_images(model, z)), "decoded here": position}
    )


def current_projection(arrays: dict, method: str, split: str) -> pj.Projection:
    mu = scores(ck.name, ck.mtime, "test")["mu"]
    if split == "test+train":
        mu = np.concatenate([mu, scores(ck.name, ck.mtime, "train")["mu"]])
    return pj.Projection.from_arrays(method, arrays, mu)


def chart(
    points: pd.DataFrame, cells: pd.DataFrame | None, train: np.ndarray | None = None, method: str = "pca"
) -> alt.LayerChart:
    """Decode lattice (invisible) under the train points (grey), the test points and the highlights."""
    # The axes span exactly the decode lattice, so that every click inside the plot decodes somewhere.
    scales = [alt.Scale(domain=[cells[a].min(), cells[b].max()], nice=False, zero=False) if cells is not None
              else alt.Scale(zero=False) for a, b in (("x", "x2"), ("y", "y2"))]  # fmt: skip
    x = alt.X("x:Q", title=AXES[method][0], axis=alt.Axis(grid=False), scale=scales[0])
    y = alt.Y("y:Q", title=AXES[method][1], axis=alt.Axis(grid=False), scale=scales[1])
    colours = alt.Scale(domain=list(test.classes), range=list(ui.PALETTE))
    dots = alt.Chart(points).mark_circle(size=14, opacity=0.7).encode(
        x=x, y=y, color=alt.Color("class:N", scale=colours, sort=list(test.classes)),
        tooltip=["image", "index", "class", "ELBO (nats)", "recon (nats)"],
    )  # fmt: skip
    layers = []
    if cells is not None:
        decode = alt.selection_point(name="cell", fields=["cx", "cy"], on="click", clear="dblclick")
        tooltip = ["image", "decoded here"]
        layers.append(alt.Chart(cells).mark_rect(opacity=0.003, color="grey").encode(
            x="x:Q", x2="x2", y="y:Q", y2="y2", tooltip=tooltip).add_params(decode))  # fmt: skip
        box = alt.selection_interval(name="box", encodings=["x", "y"], empty=False)
        pick = alt.selection_point(name="pick", fields=["index"], on="click", toggle="true")
        dots = dots.add_params(box, pick)
    if train is not None:
        train_frame = pd.DataFrame({"x": train[:, 0], "y": train[:, 1]})
        layers.append(
            alt.Chart(train_frame).mark_circle(size=6, color="#bbbbbb", opacity=0.4).encode(x=x, y=y)
        )
    layers.append(dots)
    marked = points[points["marked"] != ""]
    if len(marked):
        rings = alt.Scale(
            domain=["worst reconstructed", "least likely (lowest ELBO)"], range=["black", "#d62728"]
        )
        layers.append(alt.Chart(marked).mark_point(size=90, strokeWidth=2, shape="diamond").encode(
            x=x, y=y, stroke=alt.Stroke("marked:N", scale=rings, title="highlighted"),
            tooltip=["image", "index", "class", "ELBO (nats)", "recon (nats)", "marked"],
        ))  # fmt: skip
    return alt.layer(*layers).resolve_scale(color="independent").properties(height=640)


# ---------------------------------------------------------------- selection, decoding, highlights


def remember(event: object, coords: np.ndarray) -> None:
    """A new box or click on the map replaces session_state['atlas_picked'] (test-set indices);
    a click on empty space sets session_state['atlas_decode'] (a map position)."""
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
        st.session_state["atlas_decode"] = [float(cells[-1]["cx"]), float(cells[-1]["cy"])]


def selection_panel() -> None:
    picked = st.session_state.get("atlas_picked", [])
    st.subheader(f"Selected: {len(picked)} test images")
    if not picked:
        st.caption("Drag a box over the map, or click a point (shift-click adds more).")
        return
    s, shown = scores(ck.name, ck.mtime, "test"), np.asarray(picked[:SHOWN])
    x = ui.model_inputs(ck, test, shown)
    x_hat, _ = ex.reconstruct(model, x)
    ui.picture(ui.png(ex.to_images(x), 12), caption=f"originals (first {len(shown)})", width="stretch")
    ui.picture(ui.png(x_hat, 12), caption="reconstructions (decoded posterior means)", width="stretch")
    table = {"index": shown, "class": np.asarray(test.classes)[test.labels[shown]]}
    table |= {"ELBO (nats / image)": s["elbo"][shown], "recon (nats)": s["recon"][shown]}
    table |= {"KL (nats)": s["kl"][shown]}
    st.dataframe(pd.DataFrame(table), hide_index=True, height=210)
    label = lambda i: f"#{i} · {test.classes[test.labels[i]]}"  # noqa: E731
    chosen = st.selectbox("send one of them", picked, format_func=label, key="atlas_send")
    left, middle, right = st.columns(3)
    middle.button("as interpolation start A", on_click=ui.set_endpoint, args=("A", chosen))
    right.button("as interpolation end B", on_click=ui.set_endpoint, args=("B", chosen))
    if left.button("to the sliders", type="primary"):
        ui.send_to_sliders(ck, s["mu"][chosen])


def decode_panel(projection: pj.Projection) -> None:
    st.subheader("Decoded where you clicked")
    where = st.session_state.get("atlas_decode")
    if where is None:
        st.caption(
            "Hover anywhere on the map to preview the decoded image; click empty space to decode it here."
        )
        return
    z = projection.inverse([where])[0]
    ui.picture(ui.png(ex.decode_images(model, z)[0], scale=6), width=168,
               caption=f"map position ({where[0]:.2f}, {where[1]:.2f})")  # fmt: skip
    how = ("the exact inverse of the projection" if projection.exact_inverse else
           f"{LABELS[projection.method]} has no inverse: the distance-weighted mean latent of the "
           f"{pj.INVERSE_K} nearest points")  # fmt: skip
    st.caption(f"z = {how}.")
    if st.button("Send this z to the sliders"):
        ui.send_to_sliders(ck, z)


def highlights(n: int) -> None:
    s = scores(ck.name, ck.mtime, "test")
    for title, values in (("Worst reconstructed: recon", s["recon"]), ("Least likely: −ELBO", -s["elbo"])):
        order = pj.worst(values, n)
        st.markdown(f"**{title}** (nats / image under each)")
        captions = [f"#{i}: {values[i]:.0f}" for i in order]
        ui.image_row(ex.to_images(ui.model_inputs(ck, test, order)), captions, width=56)


# ---------------------------------------------------------------- the page


@st.fragment
def atlas() -> None:
    settings, view = st.columns([1, 3])
    with settings:
        method, seed, params, split = controls()
        ui.from_query("atlas_marked", 10, int)
        n_marked = st.slider("highlight the N worst", 0, 50, key="atlas_marked")
        st.button("Clear the selection", on_click=st.session_state.pop, args=("atlas_picked", None))
    with view, ui.errors():
        holder = st.empty()
        arrays = compute_map(method, seed, params, split, holder)
        coords = arrays["coords"]
        cells = lattice(ck.name, ck.mtime, split, method, seed, params)
        train = coords[len(test) :] if split == "test+train" else None
        figure = chart(frame(coords, n_marked), cells, train, method)
        event = holder.altair_chart(figure, on_select="rerun", key="atlas_map", width="stretch")
        st.caption(
            f"{len(test):,} test images ({test.name}), posterior means projected by {LABELS[method]}, "
            f"seed {seed}. Hover a point for its image, empty space for the image decoded there."
        )
        remember(event, coords)
    left, right = st.columns([3, 1])
    with left, ui.errors():
        selection_panel()
    with right, ui.errors():
        decode_panel(current_projection(arrays, method, split))
    if n_marked:
        highlights(min(n_marked, 12))


atlas()
