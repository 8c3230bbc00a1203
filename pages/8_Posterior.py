"""Posterior: how far the encoder's q(z|x) is from the true posterior p(z|x) for one image, and why.

For a 2-D model the exact posterior on a grid, with q and the refined q* on top and the identity
log p(x) = ELBO + KL(q ‖ p(z|x)) checked; for any model the IWAE curve and the two gaps."""

import streamlit as st

from explorer import figures, loaders, meta, state, widgets
from vae_core import ImageError
from vae_core import explore as ex
from vae_core import gaps as gp
from vae_core.preprocess import preprocessing

TEST, UPLOAD, DRAW = "test image", "upload", "draw"
GRID_SIZES = (100, 200, 300)
MAX_STEPS = 1000
SAMPLES = 16

ck = widgets.page("Posterior")
model = loaders.model(ck)
test = widgets.test_set(model)
two_d = model.config.latent_dim == 2
shape, dataset = tuple(model.config.image_shape), meta.dataset(model)
kind = preprocessing(shape, dataset)  # "digit": a canvas too; "picture": uploads only

st.markdown(
    "The ELBO is a lower bound on the evidence because of one identity: for any $q(z\\mid x)$, "
    "$\\log p(x) = \\mathrm{ELBO}(q) + \\mathrm{KL}\\big(q(z\\mid x)\\,\\|\\,p(z\\mid x)\\big)$, and a KL is "
    "never negative. The bound is tight exactly when $q$ is the true posterior. Its gap has two parts "
    "(Cremer, Li & Duvenaud 2018, *Inference Suboptimality in VAEs*): the **approximation gap** "
    "$\\log p(x) - \\mathrm{ELBO}(q^*)$, because even the best diagonal Gaussian $q^*$ for this image is "
    "not $p(z\\mid x)$, and the **amortisation gap** $\\mathrm{ELBO}(q^*) - \\mathrm{ELBO}(q)$, because the "
    "encoder, shared by all images, does not find $q^*$. Here $q^*$ is found by gradient ascent on this "
    "image's own ELBO, starting from the encoder's $q$."
)


def picture_input() -> tuple[str, object, bytes | None, str] | None:
    """The image to explain: (cache key, model input x, original bytes or None, name), or None."""
    sources = (TEST, UPLOAD, DRAW) if test is not None else (UPLOAD, DRAW)
    sources = sources if kind == "digit" else tuple(s for s in sources if s != DRAW)
    sent = state.sent_image()
    options = (*sources, state.SENT_IMAGE) if sent else sources
    how = state.choice(
        st.radio, "image", options, key=state.POSTERIOR_SOURCE, default=options[0], horizontal=True
    )
    if how != state.SENT_IMAGE:  # a sent picture lives in this session only
        state.to_url(**{state.POSTERIOR_SOURCE: how})
    if how == TEST:
        index = widgets.test_image_picker(test, "post_img")
        state.to_url(
            post_img_class=st.session_state["post_img_class"], post_img_nth=st.session_state["post_img_nth"]
        )
        name = f"test image {index} ({test.classes[test.labels[index]]})"
        return f"{test.name}/test/{index}", loaders.model_inputs(ck, test, [index]), None, name
    data, name = user_picture(how, sent)
    if data is None:
        st.info(
            "Draw a digit on the canvas."
            if how == DRAW
            else "Choose a picture of one digit."
            if kind == "digit"
            else "Choose a picture: it is resized and centre-cropped to the model's size."
        )
        return None
    try:
        return loaders.image_key(data), loaders.preprocessed(data, shape, dataset), data, name
    except ImageError as e:
        st.error(str(e), icon=":material/broken_image:")
        return None


def user_picture(how: str, sent: tuple[bytes, str] | None) -> tuple[bytes | None, str]:
    """The bytes and name of the sent picture, the drawing or the upload."""
    if how == state.SENT_IMAGE:
        return sent
    if how == DRAW:
        return widgets.drawing("post_canvas"), "your drawing"
    return widgets.upload("post_upload", kind)


def settings() -> tuple[int, int]:
    """The grid's size (2-D models) and the refinement steps."""
    left, right = st.columns(2)
    n = state.choice(
        left.selectbox, "grid (cells per axis)", GRID_SIZES, key="grid_n", default=200, disabled=not two_d
    )
    steps = state.slider(
        "refinement steps of q*", 0, MAX_STEPS, key="steps", default=gp.REFINE_STEPS, step=50, where=right
    )
    state.to_url(grid_n=n, steps=steps)
    return n, steps


def compute(key: str, x, n: int, steps: int) -> gp.ImageGaps:
    bar = st.progress(0.0, text="Computing…")
    result = loaders.explanation(
        ck, key, x, n=n, steps=steps, progress=lambda f, stage: bar.progress(f, text=f"Computing: {stage}…")
    )
    bar.empty()
    return result


def identity(result: gp.ImageGaps) -> None:
    """log p(x) = ELBO + KL(q ‖ p(z|x)), each by quadrature on the grid, and what is left over."""
    grid = result.grid
    columns = st.columns(4)
    columns[0].metric("log p(x) (nats)", f"{grid.log_px:.3f}", help="quadrature on the grid")
    columns[1].metric("ELBO (nats)", f"{grid.elbo:.3f}", help="E_q[log p(x|z)] by quadrature − KL(q ‖ p(z))")
    columns[2].metric("KL(q ‖ p(z|x)) (nats)", f"{grid.kl_q_post:.3f}", help="quadrature on the grid")
    columns[3].metric(
        "residual (nats)", f"{grid.residual:.1e}", help="log p(x) − (ELBO + KL): the grid's error"
    )
    st.latex(
        rf"\underbrace{{{grid.log_px:.3f}}}_{{\log p(x)}}"
        rf" = \underbrace{{{grid.elbo:.3f}}}_{{\mathrm{{ELBO}}}}"
        rf" + \underbrace{{{grid.kl_q_post:.3f}}}_{{\mathrm{{KL}}(q\,\|\,p(z\mid x))}}"
        rf" + \underbrace{{{grid.residual:.1e}}}_{{\text{{residual}}}}"
    )


def decodes(result: gp.ImageGaps) -> None:
    """Decodes of samples from q, from q* and (2-D) from the exact posterior, side by side."""
    seed = state.seed_from_url("post_seed")
    st.button("Resample", on_click=state.bump, args=("post_seed",))
    draws = {
        "z ~ q(z|x), encoder": ex.sample_posterior(result.mu, result.logvar, SAMPLES, seed=seed),
        "z ~ q*(z|x), refined": ex.sample_posterior(
            result.mu_refined, result.logvar_refined, SAMPLES, seed=seed
        ),
    }
    if result.grid is not None:
        draws["z ~ p(z|x), exact (from the grid)"] = gp.sample_grid(result.grid, SAMPLES, seed=seed)
    for column, (caption, z) in zip(st.columns(len(draws)), draws.items(), strict=True):
        with column:
            widgets.picture(
                widgets.png(ex.decode_images(model, z), SAMPLES // 4),
                caption=f"decodes of {caption}",
                width=168,
            )
    state.to_url(post_seed=seed)


def gaps_view(result: gp.ImageGaps) -> None:
    method = (
        "quadrature on the grid"
        if result.log_px_method == "quadrature"
        else f"IWAE with k = {max(result.ks)}"
    )
    columns = st.columns(3)
    columns[0].metric("log p(x) (nats / image)", f"{result.log_px:.2f}", help=f"by {method}")
    columns[1].metric("ELBO* (refined q*)", f"{result.elbo_refined:.2f}")
    columns[2].metric("ELBO (encoder's q)", f"{result.elbo:.2f}")
    columns = st.columns(3)
    columns[0].metric("approximation gap (nats)", f"{result.approximation_gap:.3f}", help="log p(x) − ELBO*")
    columns[1].metric("amortisation gap (nats)", f"{result.amortization_gap:.3f}", help="ELBO* − ELBO")
    st.caption(
        f"log p(x) by {method}."
        + (
            ""
            if result.log_px_method == "quadrature"
            else " IWAE is itself a lower bound, so the approximation gap shown is slightly too small."
        )
    )
    st.plotly_chart(figures.gap_bar(result), key="gap_bar")
    st.subheader("The IWAE bound tightens towards log p(x)")
    st.plotly_chart(figures.iwae_chart(result), key="iwae_curve")
    st.caption(
        "IWAE-k = log (1/k) Σ p(x, z_s) / q(z_s|x) with z_s ~ q(z|x); k = 1 is a one-sample ELBO. The "
        "curve's points share their samples (nested prefixes of one draw). Each point is one draw of a "
        "random estimator, so it can land above log p(x): only its expectation is a lower bound."
    )


def exact_view(result: gp.ImageGaps) -> None:
    """The 2-D picture and the identity, or why there is none."""
    if result.grid is None:
        st.info(
            f"This model has {model.config.latent_dim} latent dimensions: its exact posterior cannot be "
            "computed on a grid, so log p(x) comes from the IWAE bound with many samples."
        )
        return
    st.subheader("The exact posterior and its Gaussian approximations")
    st.plotly_chart(figures.posterior_map(result), key="posterior_map")
    st.caption(
        "Heat map: p(z|x) on the grid, with the regions holding 50, 90 and 99% of its mass. Black: "
        "the encoder's q(z|x), 1σ solid and 2σ dotted; red: the refined q*. Grey dashes: the prior's "
        "1-3σ circles. The view is the grid's window."
    )


source, top = st.columns([1, 2])
with source:
    picked = picture_input()
    n, steps = settings()
    if picked is not None:
        seen = widgets.png(ex.to_images(picked[1])[0])
        widgets.picture(seen, caption=f"what the model sees: {picked[3]}", width=168)
if picked is not None:
    with widgets.errors():
        result = compute(picked[0], picked[1], n, steps)
        with top:
            exact_view(result)
        if result.grid is not None:
            identity(result)
        st.subheader("Decodes of samples")
        decodes(result)
        st.subheader("Where the gap comes from")
        gaps_view(result)
