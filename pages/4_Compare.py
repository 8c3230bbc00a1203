"""Compare: two checkpoints side by side: cards, reconstructions, prior samples and KL per dimension."""

import streamlit as st

from explorer import figures, loaders, meta, paths, state, widgets
from vae_core import explore as ex

ck = widgets.page("Compare")
# every checkpoint the sidebar offers, those opened by path in this session too
offered = paths.checkpoint_options(widgets.opened_models())
options = [name for name in offered if name != ck.name] or [ck.name]
same_data = [name for name in options if loaders.dataset_of(name) == meta.dataset(loaders.model(ck))]
chosen = state.choice(
    st.selectbox,
    "Compare the sidebar's checkpoint (A) with B",
    options,
    key="other",
    default=(same_data or options)[0],  # a model of the same dataset, so that the test images are shared
)
other = widgets.checkpoint(chosen)
models = {"A": loaders.model(ck), "B": loaders.model(other)}
state.to_url(other=other.name)

st.subheader("Model cards")
st.table(meta.cards_frame({f"A: {ck.name}": models["A"], f"B: {other.name}": models["B"]}))

st.subheader("Reconstructions of the same test images")
datasets = {name: meta.data_key(model) for name, model in models.items()}  # two folders can differ
if datasets["A"] != datasets["B"]:
    a, b = (meta.dataset_label(model) for model in models.values())
    st.info(widgets.plain(f"A was trained on {a} and B on {b}: no common test images."))
elif (test := widgets.test_set(models["A"])) is not None:
    indices = widgets.random_indices(len(test), 12, seed=0)
    widgets.picture(
        widgets.png(ex.to_images(loaders.model_inputs(ck, test, indices)), 12),
        caption="test images x",
        width="stretch",
    )
    for name, (checkpoint, model) in zip("AB", ((ck, models["A"]), (other, models["B"])), strict=True):
        with widgets.errors():
            x_hat, _ = ex.reconstruct(model, loaders.model_inputs(checkpoint, test, indices))
            widgets.picture(
                widgets.png(x_hat, 12),
                caption=f"{name}: reconstructions (decoded posterior means)",
                width="stretch",
            )


@st.fragment
def prior_samples() -> None:
    """A new seed redraws only these samples, not the page."""
    st.subheader("Samples from each prior")
    where = st.columns(4)[0]
    seed = state.number_input(
        "seed (the same for both)", 0, state.MAX_SEED, key="compare_seed", default=0, where=where
    )
    left, right = st.columns(2)
    for column, (name, model) in zip((left, right), models.items(), strict=True):
        with column, widgets.errors():
            z = ex.sample_prior(model, 24, seed=seed)
            widgets.picture(
                widgets.png(ex.decode_images(model, z), 8), caption=f"{name}: z ~ N(0, I)", width="stretch"
            )
    state.to_url(compare_seed=seed)


prior_samples()


st.subheader("KL per latent dimension")
st.caption("Both charts share one y-scale, so that their bars can be compared.")
left, right = st.columns(2)
kl_max = figures.shared_kl_max(*(model.meta.metrics.get("kl_per_dim") for model in models.values()))
for column, (name, model) in zip((left, right), models.items(), strict=True):
    if kl := model.meta.metrics.get("kl_per_dim"):
        column.altair_chart(figures.kl_chart(kl, title=name, y_max=kl_max), width="stretch")
    else:
        column.info(f"{name} stores no KL per dimension.")
