"""Sliders: move each latent dimension and watch the decoded image change, dimensions ordered by KL.

Every active dimension has a slider spanning where the test set's posterior means lie in it; the
inactive ones (the decoder ignores them) are folded away. The decoded image stays in view (a sticky
column) while the sliders scroll.
"""

import numpy as np
import streamlit as st

from explorer import loaders, meta, state, widgets
from vae_core import explore as ex

SLIDER_COLUMNS = 2  # sliders side by side, so that 32 dimensions fit on a screen or two
STICKY = "sliders_picture"  # the key of the picture's container; its column stays in view

ck = widgets.page("Sliders")
st.html(
    f"<style>[data-testid=stColumn]:has(.st-key-{STICKY}) "
    "{ position: sticky; top: 3.5rem; align-self: flex-start; z-index: 1; }</style>"
)
model = loaders.model(ck)
latent_dim = model.config.latent_dim
kl = model.meta.metrics.get("kl_per_dim")
order, inactive = ex.kl_order(kl or [1.0] * latent_dim)
label = widgets.dim_label(kl, inactive)
test = widgets.test_set(model)
ranges = loaders.z_ranges(ck, test) if test is not None else loaders.prior_ranges(latent_dim)
state.current_z(ck, latent_dim)

st.caption(
    "Dimensions are ordered by their KL (nats / image), most informative first; each slider spans "
    + ("where the test set's posterior means lie" if test is not None else "±3 prior standard deviations")
    + ". Inactive ones (KL below 1% of the largest) barely change the image and are folded away."
)
start, source = st.columns([1, 3])
with source:
    z_start = widgets.latent_input(ck, test, "start", sources=state.SOURCES)
with start:
    st.button(  # wrapped, not cut off, in a narrow window
        "Start from this point", on_click=state.set_z, args=(ck, z_start), type="primary", wrap=True
    )
    st.button("Reset to the origin", on_click=state.set_z, args=(ck, widgets.origin(model)))


def dim_sliders(dims: np.ndarray) -> None:
    """A slider per dimension, SLIDER_COLUMNS side by side, each over its range (widened to hold z)."""
    columns = st.columns(SLIDER_COLUMNS)
    for n, i in enumerate(dims):
        key = state.Z_KEY.format(i)
        value = float(st.session_state[key])
        lo, hi = min(float(ranges[i][0]), value), max(float(ranges[i][1]), value)
        columns[n % SLIDER_COLUMNS].slider(label(i), lo, hi, step=0.01, key=key)


@st.fragment
def sliders() -> None:
    picture, controls = st.columns([2, 3])
    with controls:
        dim_sliders(order[~inactive[order]])
        if inactive.any():
            with st.expander(f"{int(inactive.sum())} inactive dimensions"):
                dim_sliders(order[inactive[order]])
    z = state.slider_z(latent_dim)
    with picture, st.container(key=STICKY), widgets.errors():
        image = ex.decode_images(model, z)[0]
        shown = meta.likelihood(model).shown
        widgets.picture(widgets.png(image), caption=f"decoded z ({shown})", width="stretch")  # the column's
        st.code("z = [" + ", ".join(f"{v:.2f}" for v in z) + "]", language=None, wrap_lines=True)
        st.download_button(
            "Download z (CSV)", lambda: widgets.csv_bytes(z), "z.csv", "text/csv", on_click="ignore"
        )
        st.download_button(
            "Download the image (PNG)",
            lambda: widgets.png(image, scale=8),
            "decoded.png",
            "image/png",
            on_click="ignore",
        )
    state.to_url(z=",".join(f"{v:.2f}" for v in z))


sliders()
