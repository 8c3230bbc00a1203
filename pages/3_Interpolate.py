"""Interpolate: a decoded path between two latent points (linear or slerp); latent arithmetic A − B + C."""

import streamlit as st

import explorer as ui
from vae_core import explore as ex

ck = ui.page("Interpolate")
model = ui.model(ck)
test = ui.test_set(model.meta.dataset)
SOURCES = ("random prior sample", ui.TEST_IMAGE)


def path_map(path: object) -> None:
    """The path over the encoded test set: the latent plane itself for 2-D models, else its first two PCs."""
    if test is None:
        return
    mu = ui.encoded_test_set(ck, test)
    projection = ui.map_projection(ck, test)
    if projection is not None:
        mu, path = ex.project(mu, *projection), ex.project(path, *projection)
    titles = ("z[0]", "z[1]") if projection is None else ("PC 1 of the posterior means", "PC 2")
    st.plotly_chart(
        ui.latent_map(points=mu, labels=test.labels, classes=test.classes, path=path, titles=titles)
    )


@st.fragment
def interpolation() -> None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Start A**")
        z0 = ui.latent_input(ck, test, ui.ENDPOINTS["A"], sources=SOURCES, default_class=1)
    with right:
        st.markdown("**End B**")
        z1 = ui.latent_input(ck, test, ui.ENDPOINTS["B"], sources=SOURCES, default_class=7)
    ui.from_query("method", "slerp", str, ex.METHODS)
    ui.from_query("steps", 10, int)
    left, right = st.columns(2)
    method = left.radio(
        "path",
        ex.METHODS,
        key="method",
        horizontal=True,
        help="slerp: along the great circle, norm changing linearly; linear: a straight line",
    )
    steps = right.slider("steps", 2, 24, key="steps")
    with ui.errors():
        path = ex.interpolate(z0, z1, steps, method=method)
        frames = ex.decode_images(model, path)
        strip = ui.png(frames, steps)
        ui.picture(strip, caption=f"{method} path from A to B, {steps} steps", width="stretch")
        left, right = st.columns(2)
        left.download_button(
            "Download the strip (PNG)",
            lambda: ui.png(frames, steps, scale=4),
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
    ui.to_query(method=method, steps=steps)


@st.fragment
def arithmetic() -> None:
    st.markdown(
        "The decoded **A − B + C**: what A has that B lacks, added to C (posterior means or samples)."
    )
    columns = st.columns(3)
    z = []
    for column, name, default_class in zip(columns, "ABC", (9, 4, 1), strict=True):
        with column:
            st.markdown(f"**{name}**")
            z.append(
                ui.latent_input(
                    ck, test, f"arith_{name.lower()}", sources=SOURCES, default_class=default_class
                )
            )
    with ui.errors():
        result = ex.latent_arithmetic(*z)
        images = ex.decode_images(model, [*z, result])
        ui.image_row(images, ["A", "B", "C", "A − B + C"], width=140)


interpolation_tab, arithmetic_tab = st.tabs(["Interpolation", "Latent arithmetic"])
with interpolation_tab:
    interpolation()
with arithmetic_tab:
    arithmetic()
