"""Encode: draw or upload a digit (for a colour or non-digit model: upload a picture) and see where it
lands: what the model sees, its reconstruction, its posterior on the latent map, decodes of posterior
samples, its nearest test images and its ELBO. `vae_core.preprocess.preprocessing` says which."""

import numpy as np
import streamlit as st

from explorer import figures, loaders, meta, state, widgets
from vae_core import ImageError
from vae_core import explore as ex
from vae_core import projection as pj
from vae_core.preprocess import preprocessing

SAMPLES, NEIGHBOURS = 16, 8
# Per kind of input: posterior samples a row and a neighbour's width (px). A 32-px colour picture
# needs more room than a 28-px digit to be seen in the narrow right-hand column.
SAMPLES_PER_ROW = {"digit": SAMPLES // 2, "picture": SAMPLES // 4}
NEIGHBOUR_WIDTH = {"digit": 56, "picture": 72}
RESULTS_MIN_WIDTH = 400  # px: three pictures and the metrics side by side need about this much
SLIDERS, INTERPOLATE = "pages/2_Sliders.py", "pages/3_Interpolate.py"

ck = widgets.page("Encode")
model = loaders.model(ck)
test = widgets.test_set(model)
shape, dataset = tuple(model.config.image_shape), meta.dataset(model)
kind = preprocessing(shape, dataset)  # "digit": the canvas and MNIST's centring; "picture": resize, crop
INPUTS = ("draw", "upload") if kind == "digit" else ("upload",)  # a canvas only for handwriting
THING = "digit" if kind == "digit" else "picture"
SIZE = f"{shape[1]} × {shape[2]}"


def user_input() -> tuple[bytes | None, str]:
    """The drawing's or the upload's bytes (None until there is something) and how to call it."""
    if len(INPUTS) == 1:
        return widgets.upload("upload", kind)
    how = state.choice(
        st.radio,
        "input",
        INPUTS,
        key="input",
        default=INPUTS[0],
        horizontal=True,
        label_visibility="collapsed",
    )
    state.to_url(input=how)
    if how == "draw":
        return widgets.drawing("canvas"), "your drawing"
    return widgets.upload("upload", kind)


def pictures(data: bytes, name: str, x: object) -> None:
    """The original, what the model sees, and the decoded posterior mean, side by side."""
    x_hat, _ = ex.reconstruct(model, x)
    original, seen, recon = st.columns(3)  # each image as wide as its column: they never overlap
    original.image(data, caption=f"original: {name}", width="stretch")
    with seen:
        widgets.picture(
            widgets.png(ex.to_images(x)[0]), caption=f"what the model sees ({SIZE})", width="stretch"
        )
    with recon:
        widgets.picture(
            widgets.png(x_hat[0]), caption="reconstruction (decoded posterior mean)", width="stretch"
        )
    if meta.binarization(model) == "dynamic":
        st.caption(
            "This model was trained on dynamically binarised images, each pixel black or white with its "
            "grey level as the probability. It is given the grey levels themselves: with Bernoulli pixels "
            "the reconstruction term of a grey image is the average of that term over all its "
            "binarisations, so the ELBO below does not depend on the luck of one random draw."
        )


def elbo_metrics(elbo: float, recon: float, kl: float) -> None:
    """The ELBO and its terms, and how it ranks among the test images' ELBOs."""
    row = st.container(horizontal=True, gap="medium")  # metrics as wide as their labels, wrapping
    row.metric(
        "ELBO (nats / image)", f"{elbo:.1f}", help="−(recon + KL), one posterior sample", width="content"
    )
    row.metric("recon (nats / image)", f"{recon:.1f}", width="content")
    row.metric("KL (nats / image)", f"{kl:.1f}", width="content")
    if test is None:
        return
    rank = ex.percentile_of(loaders.scores(ck, test)["elbo"], elbo)
    verdict = "typical" if rank >= 10 else "unusual" if rank >= 1 else "very unusual"
    row.metric(
        "test percentile",
        f"{rank:.0f}",
        help="the share of test images with a lower ELBO, scored as in the model card",
        width="content",
    )
    st.caption(
        f"Its ELBO is higher than that of {rank:.1f}% of the {len(test):,} test images: {verdict} "
        "for this model."
    )


def latent_map(mu: np.ndarray, logvar: np.ndarray) -> None:
    """The test set's posterior means by class, with this input's mean and its 1-σ and 2-σ ellipses."""
    projection = loaders.pca_map(ck, test)
    if projection is None:
        points, where, titles, axes = loaders.scores(ck, test)["mu"], mu, ("z[0]", "z[1]"), None
    else:
        axes = (projection.mean, projection.components)
        points, where = projection.coords, ex.project(mu, *axes)[0]
        titles = ("PC 1 of the posterior means", "PC 2")
    fig = figures.latent_map(points=points, labels=test.labels, classes=test.classes, titles=titles)
    rings = {n_std: ex.sigma_ellipse(mu, logvar, n_std=n_std, projection=axes) for n_std in (1, 2)}
    st.plotly_chart(figures.with_posterior(fig, rings, where, f"your {THING}"), key="encode_map")
    st.caption(
        f"Dots: posterior means of test images. Star: your {THING}'s posterior mean; curves: its 1-σ "
        "(shaded) and 2-σ "
        + ("ellipses" if projection is None else "ellipses, projected onto the first two principal axes")
        + ". The view is zoomed onto them: double-click the map to see all of it."
    )


@st.fragment
def posterior_samples(mu: np.ndarray, logvar: np.ndarray) -> None:
    seed = st.session_state.setdefault("post_seed", 0)
    st.button("Resample", on_click=state.bump, args=("post_seed",))
    with widgets.errors():
        z = ex.sample_posterior(mu, logvar, SAMPLES, seed=seed)
        images = ex.decode_images(model, z)
        tiled = widgets.png(images, SAMPLES_PER_ROW[kind])
        widgets.picture(tiled, caption="decodes of z ~ q(z|x)", width="stretch")


def neighbours(mu: np.ndarray) -> None:
    indices, distances = ex.nearest(loaders.scores(ck, test)["mu"], mu, NEIGHBOURS)
    captions = [f"{test.classes[test.labels[i]]} · {d:.2f}" for i, d in zip(indices, distances, strict=True)]
    widgets.image_strip(ex.uint8_images(test.images[indices]), captions, width=NEIGHBOUR_WIDTH[kind])
    st.caption(f"Test images whose posterior means are closest to your {THING}'s (Euclidean distance).")


def send(mu: np.ndarray) -> None:
    """Hand the posterior mean to the Sliders or the Interpolate page and go there."""
    row = st.container(horizontal=True)  # buttons as wide as their labels; a narrow page wraps them
    if row.button("Send to sliders", icon=":material/tune:"):
        state.set_z(ck, mu)
        st.switch_page(SLIDERS)
    for end in state.ENDPOINTS:
        if row.button(f"Interpolation endpoint {end}", icon=":material/timeline:"):
            state.set_endpoint(end)
            st.switch_page(INTERPOLATE)


def encode(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Preprocess, encode and score the input and show the pictures and the ELBO; (mu, logvar) or None."""
    try:
        x = loaders.preprocessed(data, shape, dataset)  # (1, C, H, W) in [0, 1]
    except ImageError as e:
        st.error(str(e), icon=":material/broken_image:")
        return None
    scores = pj.score_inputs(model, x)  # ELBO terms with one seeded posterior sample, as for the test set
    mu, logvar = scores["mu"][0], scores["logvar"][0]  # (latent_dim,) each
    state.remember_encoded(ck, mu)
    pictures(data, name, x)
    elbo_metrics(float(scores["elbo"][0]), float(scores["recon"][0]), float(scores["kl"][0]))
    send(mu)
    if st.button("See its posterior", icon=":material/blur_on:"):
        state.send_image(data, name)
        st.switch_page("pages/8_Posterior.py")
    return mu, logvar


def details(mu: np.ndarray, logvar: np.ndarray) -> None:
    """The map, the posterior samples and the neighbours, below the input."""
    left, right = st.columns([3, 2])
    with right:
        st.subheader("Decodes of posterior samples")
        posterior_samples(mu, logvar)
        if test is not None:
            st.subheader("Nearest test images")
            neighbours(mu)
    if test is not None:
        with left:
            st.subheader("Where it lands")
            latent_map(mu, logvar)


# The input keeps the canvas's width; the results take the rest of the row, or all of the next line
# when less than RESULTS_MIN_WIDTH is left: the flex row wraps its item (the results' layout wrapper)
# at that min-width.
st.html(
    "<style>[data-testid=stLayoutWrapper]:has(> .st-key-encode_results) "
    f"{{ min-width: min({RESULTS_MIN_WIDTH}px, 100%); }}</style>"
)
row = st.container(horizontal=True, gap="large")
source, top = row.container(width=widgets.CANVAS), row.container(key="encode_results")
with source:
    data, name = user_input()
encoded = None
with top:
    if data is None:
        if kind == "digit":
            st.info("Draw a digit on the canvas, or choose *upload* and pick a picture of one.")
        else:
            st.info(f"Upload a picture: it is resized and centre-cropped to {SIZE}, as a folder import is.")
    else:
        with widgets.errors():
            encoded = encode(data, name)
if encoded is not None:
    with widgets.errors():
        details(*encoded)
