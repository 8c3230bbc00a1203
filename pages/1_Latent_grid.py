"""Latent grid: an N×N slice of latent space decoded in one batch, under the encoded test set (2-D models)."""

import streamlit as st

from explorer import figures, loaders, state, widgets
from vae_core import explore as ex

ck = widgets.page("Latent grid")
model = loaders.model(ck)
latent_dim = model.config.latent_dim
kl = model.meta.metrics.get("kl_per_dim")
order, inactive = ex.kl_order(kl or [1.0] * latent_dim)
test = widgets.test_set(model)


def slice_controls() -> tuple[tuple[int, int], object]:
    """For latent_dim > 2: the two dimensions spanned and the point the slice passes through."""
    if latent_dim == 2:
        return (0, 1), widgets.origin(model)
    dims, label = list(range(latent_dim)), widgets.dim_label(kl, inactive)
    d0 = state.choice(
        st.selectbox, "horizontal dimension", dims, key="d0", default=int(order[0]), format_func=label
    )
    d1 = state.choice(
        st.selectbox, "vertical dimension", dims, key="d1", default=int(order[1]), format_func=label
    )
    st.caption("The other dimensions stay fixed at the point the slice passes through:")
    return (d0, d1), widgets.latent_input(ck, test, "through")


@st.fragment
def grid_view() -> None:
    controls, view = st.columns([1, 3])
    with controls:
        n = widgets.grid_side(model.config.image_shape)
        spacing = state.choice(
            st.radio,
            "spacing",
            ex.SPACINGS,
            key="spacing",
            default="quantile",
            horizontal=True,
            help="quantile: Φ⁻¹ of evenly spaced prior probabilities; range: evenly spaced z",
        )
        if spacing == "quantile":
            extent = state.slider(
                "prior mass covered", 0.5, 0.998, key="mass", default=0.9, step=0.002, format="%.3f"
            )
        else:
            extent = state.slider("range ± (z units)", 0.5, 6.0, key="range", default=3.0, step=0.25)
        dims, base = slice_controls()
        show_points = (
            latent_dim == 2
            and test is not None
            and state.toggle("show the encoded test set", key="points", default=True)
        )
    with view, widgets.errors():
        images, axis = ex.latent_grid(model, n, spacing=spacing, extent=extent, dims=dims, base=base)
        mu = loaders.scores(ck, test)["mu"] if show_points else None
        fig = figures.latent_map(
            grid=images,
            axis=axis,
            spacing=spacing,
            points=None if mu is None else ex.to_display(mu, spacing),
            labels=None if mu is None else test.labels,
            classes=() if mu is None else test.classes,
            titles=(f"z[{dims[0]}]", f"z[{dims[1]}]"),
        )
        event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="grid_map")
        st.caption(
            ("Axes on the prior-quantile scale Φ(z), labelled in z. " if spacing == "quantile" else "")
            + ("Dots: posterior means of test images. " if mu is not None else "")
            + "Click a cell or a dot to send its z to the Sliders page."
        )
        send_clicked(event, spacing, dims, base)
        downloads(images)
    params = {"n": n, "spacing": spacing, "mass" if spacing == "quantile" else "range": extent}
    if latent_dim > 2:
        params |= {"d0": dims[0], "d1": dims[1]}
    elif test is not None:
        params["points"] = show_points
    state.to_url(**params)


def send_clicked(event: object, spacing: str, dims: tuple[int, int], base: object) -> None:
    """A newly clicked point becomes the sliders' z; a number input does the same without a mouse."""
    points = event.selection["points"] if event else []
    if points and points != st.session_state.get("_grid_clicked"):
        st.session_state["_grid_clicked"] = points
        x, y = ex.from_display([points[0]["x"], points[0]["y"]], spacing)
        widgets.send_to_sliders(ck, ex.slice_point(base, dims, (x, y)))
    with st.expander("Send a point to the sliders by typing it"):
        left, right = st.columns(2)
        x = left.number_input(f"z[{dims[0]}]", -6.0, 6.0, 0.0, 0.1, key="send_x")
        y = right.number_input(f"z[{dims[1]}]", -6.0, 6.0, 0.0, 0.1, key="send_y")
        if st.button("Send to sliders"):
            widgets.send_to_sliders(ck, ex.slice_point(base, dims, (x, y)))


def downloads(images: object) -> None:
    left, right = st.columns(2)
    left.download_button(
        "Download the grid (PNG)",
        lambda: widgets.grid_png(images, scale=2),
        "latent-grid.png",
        "image/png",
        on_click="ignore",
        wrap=True,
    )
    if test is not None:
        right.download_button(
            "Download the encoded test set (CSV)",
            lambda: loaders.test_set_csv(ck, test),
            "encoded-test-set.csv",
            "text/csv",
            on_click="ignore",
            wrap=True,
        )


grid_view()
