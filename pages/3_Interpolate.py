"""Interpolate: a decoded path between two latent points (linear or slerp); latent arithmetic A − B + C."""

import streamlit as st

from explorer import figures, loaders, state, widgets
from vae_core import explore as ex

ck = widgets.page("Interpolate")
model = loaders.model(ck)
test = widgets.test_set(model)
SOURCES = (state.PRIOR, state.TEST_IMAGE)


def wrapped(c: int) -> int:
    """Class c of a digit set (1 and 7 as the ends, 9 - 4 + 1), or the last class of a set of fewer."""
    return min(c, len(test.classes) - 1) if test is not None else c


def path_map(path: object) -> None:
    """The path over the encoded test set: the latent plane itself for 2-D models, else its PCA map."""
    if test is None:
        return
    projection = loaders.pca_map(ck, test)
    if projection is None:
        points, titles = loaders.scores(ck, test)["mu"], ("z[0]", "z[1]")
    else:
        points, titles = projection.coords, ("PC 1 of the posterior means", "PC 2")
        path = ex.project(path, projection.mean, projection.components)
    st.plotly_chart(
        figures.latent_map(points=points, labels=test.labels, classes=test.classes, path=path, titles=titles)
    )


@st.fragment
def interpolation() -> None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Start A**")
        z0 = widgets.latent_input(ck, test, state.ENDPOINTS["A"], sources=SOURCES, default_class=wrapped(1))
    with right:
        st.markdown("**End B**")
        z1 = widgets.latent_input(ck, test, state.ENDPOINTS["B"], sources=SOURCES, default_class=wrapped(7))
    left, right = st.columns(2)
    method = state.choice(
        left.radio,
        "path",
        ex.METHODS,
        key="method",
        default="slerp",
        horizontal=True,
        help="slerp: along the great circle, norm changing linearly; linear: a straight line",
    )
    steps = state.slider("steps", 2, 24, key="steps", default=10, where=right)
    with widgets.errors():
        path = ex.interpolate(z0, z1, steps, method=method)
        frames = ex.decode_images(model, path)
        strip = widgets.png(frames, steps)
        widgets.picture(strip, caption=f"{method} path from A to B, {steps} steps", width="stretch")
        left, right = st.columns(2)
        left.download_button(
            "Download the strip (PNG)",
            lambda: widgets.png(frames, steps, scale=4),
            "interpolation.png",
            "image/png",
            on_click="ignore",
        )
        right.download_button(
            "Download the animation (GIF)",
            lambda: ex.to_gif(frames, duration_ms=120),
            "interpolation.gif",
            "image/gif",
            on_click="ignore",
        )
        path_map(path)
    state.to_url(method=method, steps=steps)


@st.fragment
def arithmetic() -> None:
    st.markdown(
        "The decoded **A − B + C**: what A has that B lacks, added to C (posterior means or samples)."
    )
    columns = st.columns(3)
    z = []
    for column, name, digit in zip(columns, "ABC", (9, 4, 1), strict=True):
        with column:
            st.markdown(f"**{name}**")
            key = f"arith_{name.lower()}"
            z.append(widgets.latent_input(ck, test, key, sources=SOURCES, default_class=wrapped(digit)))
    with widgets.errors():
        result = ex.latent_arithmetic(*z)
        images = ex.decode_images(model, [*z, result])
        widgets.image_row(images, ["A", "B", "C", "A − B + C"], width=140)


interpolation_tab, arithmetic_tab = st.tabs(["Interpolation", "Latent arithmetic"])
with interpolation_tab:
    interpolation()
with arithmetic_tab:
    arithmetic()
