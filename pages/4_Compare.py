"""Compare: two checkpoints side by side: cards, reconstructions, prior samples and KL per dimension."""

import streamlit as st

import explorer as ui
from vae_core import explore as ex

ck = ui.page("Compare")
options = [name for name in ui.checkpoint_options() if name != ck.name] or [ck.name]
ui.from_query("other", options[0], str, options)
other = ui.checkpoint(st.selectbox("Compare the sidebar's checkpoint (A) with B", options, key="other"))
models = {"A": ui.model(ck), "B": ui.model(other)}
ui.to_query(other=other.name)

st.subheader("Model cards")
st.table(ui.cards_frame({f"A: {ck.name}": models["A"], f"B: {other.name}": models["B"]}))

st.subheader("Reconstructions of the same test images")
if models["A"].meta.dataset != models["B"].meta.dataset:
    st.info(
        f"A was trained on {models['A'].meta.dataset} and B on {models['B'].meta.dataset}: "
        "no common test images."
    )
elif (test := ui.test_set(models["A"].meta.dataset)) is not None:
    indices = ui.random_indices(len(test), 12, seed=0)
    ui.picture(
        ui.png(ex.to_images(ui.model_inputs(ck, test, indices)), 12), caption="test images x", width=840
    )
    for name, (checkpoint, model) in zip("AB", ((ck, models["A"]), (other, models["B"])), strict=True):
        with ui.errors():
            x_hat, _ = ex.reconstruct(model, ui.model_inputs(checkpoint, test, indices))
            ui.picture(
                ui.png(x_hat, 12), caption=f"{name}: reconstructions (decoded posterior means)", width=840
            )


@st.fragment
def prior_samples() -> None:
    """A new seed redraws only these samples, not the page."""
    st.subheader("Samples from each prior")
    ui.from_query("compare_seed", 0, int)
    seed = st.columns(4)[0].number_input("seed (the same for both)", 0, 10**6, key="compare_seed")
    left, right = st.columns(2)
    for column, (name, model) in zip((left, right), models.items(), strict=True):
        with column, ui.errors():
            z = ex.sample_prior(model, 24, seed=seed)
            ui.picture(ui.png(ex.decode_images(model, z), 8), caption=f"{name}: z ~ N(0, I)", width="stretch")
    ui.to_query(compare_seed=seed)


prior_samples()


st.subheader("KL per latent dimension")
left, right = st.columns(2)
for column, (name, model) in zip((left, right), models.items(), strict=True):
    if kl := model.meta.metrics.get("kl_per_dim"):
        column.altair_chart(ui.kl_chart(kl, title=name), width="stretch")
    else:
        column.info(f"{name} stores no KL per dimension.")
