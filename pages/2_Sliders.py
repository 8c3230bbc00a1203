"""Sliders: move each latent dimension and watch the decoded image change, dimensions ordered by KL."""

import streamlit as st

import explorer as ui
from vae_core import explore as ex

MAX_SLIDERS = 16  # beyond this many dimensions, the least informative get number inputs

ck = ui.page("Sliders")
model = ui.model(ck)
latent_dim = model.config.latent_dim
kl = model.meta.metrics.get("kl_per_dim")
order, inactive = ex.kl_order(kl or [1.0] * latent_dim)
label = ui.dim_label(kl, inactive)
test = ui.test_set(model.meta.dataset)
ui.current_z(ck)

st.caption(
    "Dimensions are ordered by their KL (nats / image), most informative first; "
    "inactive ones (KL below 1% of the largest) barely change the image."
)
start, source = st.columns([1, 3])
with source:
    z_start = ui.latent_input(ck, test, "start", sources=ui.SOURCES)
with start:
    st.button("Start from this point", on_click=ui.set_z, args=(ck, z_start), type="primary")
    st.button("Reset to the origin", on_click=ui.set_z, args=(ck, ui.origin(model)))


@st.fragment
def sliders() -> None:
    picture, controls = st.columns([2, 3])
    with controls:
        for rank, i in enumerate(order):
            widget = st.slider if rank < MAX_SLIDERS else st.number_input
            widget(label(i), -5.0, 5.0, step=0.01, key=ui.Z_KEY.format(i))
    z = [st.session_state[ui.Z_KEY.format(i)] for i in range(latent_dim)]
    st.session_state["z"] = z
    with picture, ui.errors():
        image = ex.decode_images(model, z)[0]
        ui.picture(ui.png(image), caption="decoded z (pixel means, sigmoid of the logits)", width=336)
        st.code("z = [" + ", ".join(f"{v:.2f}" for v in z) + "]", language=None)
        st.download_button("Download z (CSV)", ui.csv_bytes(z), "z.csv", "text/csv", on_click="ignore")
        st.download_button(
            "Download the image (PNG)",
            lambda: ui.png(image, scale=8),
            "decoded.png",
            "image/png",
            on_click="ignore",
        )
    ui.to_query(z=",".join(f"{v:.2f}" for v in z))


sliders()
