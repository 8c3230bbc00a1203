"""Sliders: move each latent dimension and watch the decoded image change, dimensions ordered by KL."""

import streamlit as st

from explorer import loaders, state, widgets
from vae_core import explore as ex

MAX_SLIDERS = 16  # beyond this many dimensions, the least informative get number inputs

ck = widgets.page("Sliders")
model = loaders.model(ck)
latent_dim = model.config.latent_dim
kl = model.meta.metrics.get("kl_per_dim")
order, inactive = ex.kl_order(kl or [1.0] * latent_dim)
label = widgets.dim_label(kl, inactive)
test = widgets.test_set(model)
state.current_z(ck, latent_dim)

st.caption(
    "Dimensions are ordered by their KL (nats / image), most informative first; "
    "inactive ones (KL below 1% of the largest) barely change the image."
)
start, source = st.columns([1, 3])
with source:
    z_start = widgets.latent_input(ck, test, "start", sources=state.SOURCES)
with start:
    st.button("Start from this point", on_click=state.set_z, args=(ck, z_start), type="primary")
    st.button("Reset to the origin", on_click=state.set_z, args=(ck, widgets.origin(model)))


@st.fragment
def sliders() -> None:
    picture, controls = st.columns([2, 3])
    with controls:
        for rank, i in enumerate(order):
            widget = st.slider if rank < MAX_SLIDERS else st.number_input
            widget(label(i), -state.Z_RANGE, state.Z_RANGE, step=0.01, key=state.Z_KEY.format(i))
    z = state.slider_z(latent_dim)
    with picture, widgets.errors():
        image = ex.decode_images(model, z)[0]
        widgets.picture(
            widgets.png(image), caption="decoded z (pixel means, sigmoid of the logits)", width=336
        )
        st.code("z = [" + ", ".join(f"{v:.2f}" for v in z) + "]", language=None)
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
