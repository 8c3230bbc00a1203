"""Overview: what a VAE is, the selected model's card, its KL per dimension, samples and reconstructions.

Run with `streamlit run app.py` (options after `--`: `--checkpoint PATH`, `--data-dir DIR`).
The other pages live in pages/, Streamlit's built-in multipage folder.
"""

import streamlit as st

from explorer import figures, loaders, meta, state, widgets
from vae_core import explore as ex

ck = widgets.page("VAE latent-space explorer", sidebar_card=False)  # the card is on this page
model = loaders.model(ck)

st.markdown(
    "A **variational autoencoder** learns an encoder $q_\\phi(z\\mid x)=\\mathcal N(\\mu_\\phi(x),"
    "\\operatorname{diag}\\sigma^2_\\phi(x))$ and a decoder $p_\\theta(x\\mid z)$ (here "
    f"{meta.likelihood(model).pixels}) under the prior $p(z)=\\mathcal N(0, I)$. Sampling is "
    "reparameterised, $z=\\mu+\\sigma\\odot\\varepsilon$ with $\\varepsilon\\sim\\mathcal N(0,I)$, so both "
    "networks are trained together by maximising the evidence lower bound:"
)
st.latex(  # two lines, so that it fits a narrow window
    r"\begin{aligned}\log p_\theta(x) \;\ge\; \mathrm{ELBO}(x) &= \mathbb E_{q_\phi(z\mid x)}"
    r"\big[\log p_\theta(x\mid z)\big] \\ &\quad - \mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)"
    r"\end{aligned}"
)
st.markdown(
    "Below, *recon* is $-\\mathbb E_q[\\log p(x\\mid z)]$ and *KL* the second term, both in nats per test "
    "image, so ELBO = −(recon + KL). A dimension whose KL is near zero is *inactive*: its posterior equals "
    "the prior and the decoder ignores it."
)
st.page_link("pages/8_Posterior.py", label="How tight is the bound for one image? See its exact posterior",
             icon=":material/blur_on:")  # fmt: skip

left, right = st.columns([2, 3])
with left:
    st.subheader("Model card")
    widgets.card_table(model)
with right:
    st.subheader("KL per latent dimension")
    if kl := model.meta.metrics.get("kl_per_dim"):
        st.altair_chart(figures.kl_chart(kl), width="stretch")
    else:
        st.info(
            "This checkpoint stores no KL per dimension; run `python -m vae_core evaluate --write` on it."
        )


@st.fragment
def prior_samples() -> None:
    st.subheader("Samples from the prior")
    seed = state.seed_from_url("seed")
    left, right = st.columns([3, 1])
    temperature = state.slider(
        "temperature (σ of z)", 0.0, 2.0, key="temperature", default=1.0, step=0.05, where=left
    )
    right.button("Resample", on_click=state.bump, args=("seed",), width="stretch")
    with widgets.errors():
        z = ex.sample_prior(model, 32, temperature=temperature, seed=seed)
        widgets.picture(
            widgets.png(ex.decode_images(model, z), 16),
            caption="z ~ N(0, temperature² I), decoded",
            width="stretch",
        )
    state.to_url(temperature=temperature, seed=seed)


@st.fragment
def reconstructions() -> None:
    st.subheader("Reconstructions of test images")
    test = widgets.test_set(model)
    if test is None:
        return
    seed = state.seed_from_url("recon_seed")
    st.button("Other images", on_click=state.bump, args=("recon_seed",))
    x = loaders.model_inputs(ck, test, widgets.random_indices(len(test), 12, seed))
    colour = model.config.image_shape[0] > 1
    with widgets.errors():
        x_hat, error = ex.reconstruct(model, x)
        widgets.picture(
            widgets.png(ex.to_images(x), 12),
            caption=meta.input_caption(model),
            width="stretch",
        )
        widgets.picture(
            widgets.png(x_hat, 12),
            caption=f"reconstruction: the decoded posterior mean ({meta.likelihood(model).shown})",
            width="stretch",
        )
        widgets.picture(
            widgets.png(ex.error_heat(error), 12),
            caption="per-pixel error |x − x̂|" + (", averaged over the colour channels" if colour else ""),
            width="stretch",
        )
        widgets.picture(
            widgets.png(figures.error_ramp()),
            caption="error scale: 0 (black) → 0.33 (red) → 0.67 (yellow) → 1 (white)",
            width=256,
        )
    state.to_url(recon_seed=seed)


prior_samples()
reconstructions()
