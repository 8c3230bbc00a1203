"""Figure builders: the Plotly latent map (a decoded grid under the encoded test set, a path, a
posterior), the Atlas's layered Altair map, and KL-per-dimension bars. NumPy in, figure out: the
pages hand them to st.plotly_chart / st.altair_chart."""

from __future__ import annotations

import base64

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.widgets import grid_png
from vae_core import explore as ex
from vae_core import gaps as gp

MAP_POINTS = 5000  # test images drawn on latent maps: enough to see the classes, light in the browser
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


ACTIVE, INACTIVE = "active", "inactive (KL < 1% of max)"  # the KL chart's legend


def kl_chart(kl_per_dim: list[float], *, title: str = "", y_max: float | None = None) -> alt.Chart:
    """KL per latent dimension as bars, inactive dimensions (KL < 1% of the largest) in grey; `y_max`
    fixes the top of the y-scale (to compare charts side by side), else it fits the bars."""
    _, inactive = ex.kl_order(kl_per_dim)
    frame = pd.DataFrame(
        {
            "dimension": range(len(kl_per_dim)),
            "KL (nats / image)": kl_per_dim,
            "state": np.where(inactive, INACTIVE, ACTIVE),
        }
    )
    y_scale = alt.Scale(domain=[0, y_max]) if y_max is not None else alt.Undefined
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            x=alt.X("dimension:O"),
            y=alt.Y("KL (nats / image):Q", scale=y_scale),
            color=alt.Color(
                "state:N",
                scale=alt.Scale(domain=[ACTIVE, INACTIVE], range=["#4c78a8", "#bbbbbb"]),
                legend=alt.Legend(title=None),
            ),
            tooltip=["dimension", "KL (nats / image)", "state"],
        )
        .properties(height=220)
    )


def shared_kl_max(*kl_per_dim: list[float] | None) -> float | None:
    """The largest KL of several models' dimensions: one y-scale for their KL charts."""
    values = [max(kl) for kl in kl_per_dim if kl]
    return max(values) if values else None


SCALE_SIZE = (12, 256)  # (height, width) pixels of the error map's colour bar


def error_ramp() -> np.ndarray:
    """The colour bar of `explore.colorize` as an RGB image (12, 256, 3) in [0, 1]: error 0 on the left
    (black), through red and yellow, to 1 on the right (white)."""
    height, width = SCALE_SIZE
    ramp = ex.colorize(np.linspace(0.0, 1.0, width))  # (width, 3)
    return np.broadcast_to(ramp, (height, width, 3))


def _data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def _class_colorscale(k: int) -> list[list]:
    """A stepped colorscale: class c (as a number from 0 to k-1) gets PALETTE[c]."""
    steps = [PALETTE[c % len(PALETTE)] for c in range(k)]
    return [[edge, color] for c, color in enumerate(steps) for edge in (c / k, (c + 1) / k)]


def _points_traces(points: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """Encoded images as ONE WebGL trace coloured by class (one trace per class made every redraw
    slower), plus an empty trace per class for the legend."""
    k = max(len(classes), 1)
    marker = {
        "size": 4,
        "opacity": 0.6,
        "color": labels,
        "colorscale": _class_colorscale(k),
        "cmin": -0.5,
        "cmax": k - 0.5,
    }
    return [
        {
            "type": "scattergl",
            "x": points[:, 0],
            "y": points[:, 1],
            "mode": "markers",
            "showlegend": False,
            "name": "test images",
            "hoverinfo": "none",  # no label, but clicks still select the point
            "marker": marker,
        },
        *(
            {
                "type": "scattergl",
                "x": [None],
                "y": [None],
                "mode": "markers",
                "name": name,
                "marker": {"size": 8, "color": PALETTE[c % len(PALETTE)]},
            }
            for c, name in enumerate(classes)
        ),
    ]


def _grid_parts(grid: np.ndarray, axis: np.ndarray, spacing: str) -> tuple[dict, dict]:
    """A decoded grid as the map's background image, and a trace of invisible markers at the cell
    centres so that a click selects a cell (its customdata is the cell's z)."""
    centres = ex.to_display(axis, spacing)
    low, high = _edges(centres)
    image = {
        "source": _data_uri(grid_png(grid)),
        "xref": "x",
        "yref": "y",
        "x": low,
        "y": high,
        "sizex": high - low,
        "sizey": high - low,
        "sizing": "stretch",
        "layer": "below",
    }
    cx, cy = np.meshgrid(centres, centres)
    zx, zy = np.meshgrid(axis, axis)
    cells = {
        "type": "scatter",
        "x": cx.ravel(),
        "y": cy.ravel(),
        "customdata": np.stack([zx.ravel(), zy.ravel()], 1),
        "mode": "markers",
        "name": "grid cells",
        "showlegend": False,
        "marker": {"size": max(4, 360 // len(axis)), "opacity": 0.0, "symbol": "square"},
        "hovertemplate": "z = (%{customdata[0]:.2f}, %{customdata[1]:.2f})<extra></extra>",
    }
    return image, cells


def latent_map(
    *,
    grid: np.ndarray | None = None,
    axis: np.ndarray | None = None,
    spacing: str = "range",
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: tuple[str, ...] = (),
    path: np.ndarray | None = None,
    titles: tuple[str, str] = ("z[0]", "z[1]"),
    path_ends: tuple[str, str] = ("A", "B"),
) -> go.Figure:
    """A 2-D latent map in display coordinates: a decoded grid under the encoded test set and a path
    (N, 2) whose first and last points are labelled `path_ends`.

    The figure is written as one plain spec and validated once: building it call by call
    (add_trace, update_layout) cost more than decoding the grid.
    """
    traces, images = [], []
    axes = {"showgrid": False, "zeroline": False}
    if grid is not None:
        image, cells = _grid_parts(grid, axis, spacing)
        traces.append(cells)
        images.append(image)
        if spacing == "quantile":  # positions Φ(z), labelled with the z values themselves
            z = np.array([-2, -1, -0.5, 0, 0.5, 1, 2])
            axes |= {"tickvals": ex.to_display(z, "quantile"), "ticktext": [f"{v:g}" for v in z]}
    if points is not None:
        traces += _points_traces(points[:MAP_POINTS], labels[:MAP_POINTS], classes)
    if path is not None:
        traces.append(
            {
                "type": "scatter",
                "x": path[:, 0],
                "y": path[:, 1],
                "mode": "lines+markers",
                "name": "path",
                "line": {"color": "black", "width": 2},
                "marker": {"size": 7, "color": "black"},
            }
        )
        traces.append(_ends_trace(path, path_ends))
    layout = {
        "images": images,
        "height": 640,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": {"itemsizing": "constant"},
        "xaxis": {"title": {"text": titles[0]}, **axes},
        "yaxis": {"title": {"text": titles[1]}, "scaleanchor": "x", **axes},
    }
    return go.Figure({"data": traces, "layout": layout})


def _ends_trace(path: np.ndarray, names: tuple[str, str]) -> dict:
    """The path's two ends as large labelled markers, so that A and B can be told apart on the map."""
    return {
        "type": "scatter",
        "x": [path[0, 0], path[-1, 0]],
        "y": [path[0, 1], path[-1, 1]],
        "mode": "markers+text",
        "name": "path ends",
        "showlegend": False,
        "text": list(names),
        "textposition": "middle center",  # the letter inside its disc, whichever way the path leaves
        "textfont": {"size": 13, "color": "black"},
        "marker": {"size": 20, "color": "white", "line": {"color": "black", "width": 2}},
        "hovertemplate": "%{text}: (%{x:.2f}, %{y:.2f})<extra></extra>",
    }


def _edges(centres: np.ndarray) -> tuple[float, float]:
    """The outer edges of evenly spaced cells given their centres."""
    half = (centres[-1] - centres[0]) / (2 * max(len(centres) - 1, 1)) if len(centres) > 1 else 0.5
    return float(centres[0] - half), float(centres[-1] + half)


POSTERIOR_ZOOM = 2.5  # the initial view spans the outer ellipse this many times: 1σ then spans 1/5 of it
MIN_HALF_VIEW = 0.25  # latent units: the smallest half-width of that view, to keep the neighbours in sight
STAR_SIZE = 11  # px: smaller than the 1σ ellipse of a typical digit at the initial zoom


def with_posterior(
    fig: go.Figure, rings: dict[int, np.ndarray], where: np.ndarray, name: str = "your digit"
) -> go.Figure:
    """A latent map with one encoded image on it: its n-σ ellipses {n: (M, 2) curve}, the 1σ one
    shaded, and a star at its posterior mean `where` (2,); the initial view is zoomed onto them
    (`posterior_view`), the rest of the map a double-click away."""
    for n_std, ring in sorted(rings.items()):
        fig.add_trace(
            go.Scattergl(
                x=ring[:, 0],
                y=ring[:, 1],
                mode="lines",
                name=f"{n_std}σ of q(z|x)",
                line={
                    "color": "black",
                    "width": 2.5 if n_std == 1 else 1.5,
                    "dash": "solid" if n_std == 1 else "dot",
                },
                fill="toself" if n_std == 1 else "none",
                fillcolor="rgba(0, 0, 0, 0.15)",
                hoverinfo="skip",
            )
        )
    star = {"symbol": "star", "size": STAR_SIZE, "color": "black", "line": {"color": "white", "width": 1}}
    fig.add_trace(go.Scattergl(x=[where[0]], y=[where[1]], mode="markers", name=name, marker=star))
    x_range, y_range = posterior_view(rings)
    fig.update_layout(xaxis={"range": x_range}, yaxis={"range": y_range})
    return fig


def posterior_view(rings: dict[int, np.ndarray]) -> tuple[list[float], list[float]]:
    """Square axis ranges centred on the outermost ellipse, POSTERIOR_ZOOM times its larger half-extent
    (at least MIN_HALF_VIEW) each side: the uncertainty fills a visible part of the plot."""
    outer = rings[max(rings)]  # (M, 2)
    low, high = outer.min(0), outer.max(0)
    centre = (low + high) / 2
    half = max(POSTERIOR_ZOOM * float((high - low).max()) / 2, MIN_HALF_VIEW)
    return [float(centre[0] - half), float(centre[0] + half)], [
        float(centre[1] - half),
        float(centre[1] + half),
    ]


def atlas_chart(
    points: pd.DataFrame,
    cells: pd.DataFrame | None,
    *,
    classes: tuple[str, ...],
    titles: tuple[str, str],
    train: np.ndarray | None = None,
) -> alt.LayerChart:
    """The Atlas's map: a decode lattice (invisible, for hover and click) under the train points
    (grey), the test points coloured by class (box and click selections) and the highlighted ones.

    `points` has a row per test image (x, y, index, class, scores, image, marked); `cells` is
    `loaders.lattice`; `train` the (M, 2) map positions of training images."""
    # The axes span exactly the decode lattice, so that every click inside the plot decodes somewhere.
    scales = [alt.Scale(domain=[cells[a].min(), cells[b].max()], nice=False, zero=False) if cells is not None
              else alt.Scale(zero=False) for a, b in (("x", "x2"), ("y", "y2"))]  # fmt: skip
    x = alt.X("x:Q", title=titles[0], axis=alt.Axis(grid=False), scale=scales[0])
    y = alt.Y("y:Q", title=titles[1], axis=alt.Axis(grid=False), scale=scales[1])
    colours = alt.Scale(domain=list(classes), range=list(PALETTE))
    dots = alt.Chart(points).mark_circle(size=14, opacity=0.7).encode(
        x=x, y=y, color=alt.Color("class:N", scale=colours, sort=list(classes)),
        tooltip=["image", "index", "class", "ELBO (nats)", "recon (nats)"],
    )  # fmt: skip
    layers = []
    if cells is not None:
        decode = alt.selection_point(name="cell", fields=["cx", "cy"], on="click", clear="dblclick")
        tooltip = ["image", "decoded here"]
        layers.append(alt.Chart(cells).mark_rect(opacity=0.003, color="grey").encode(
            x="x:Q", x2="x2", y="y:Q", y2="y2", tooltip=tooltip).add_params(decode))  # fmt: skip
        box = alt.selection_interval(name="box", encodings=["x", "y"], empty=False)
        pick = alt.selection_point(name="pick", fields=["index"], on="click", toggle="true")
        dots = dots.add_params(box, pick)
    if train is not None:
        train_frame = pd.DataFrame({"x": train[:, 0], "y": train[:, 1]})
        layers.append(
            alt.Chart(train_frame).mark_circle(size=6, color="#bbbbbb", opacity=0.4).encode(x=x, y=y)
        )
    layers.append(dots)
    marked = points[points["marked"] != ""]
    if len(marked):
        rings = alt.Scale(
            domain=["worst reconstructed", "least likely (lowest ELBO)"], range=["black", "#d62728"]
        )
        layers.append(alt.Chart(marked).mark_point(size=90, strokeWidth=2, shape="diamond").encode(
            x=x, y=y, stroke=alt.Stroke("marked:N", scale=rings, title="highlighted"),
            tooltip=["image", "index", "class", "ELBO (nats)", "recon (nats)", "marked"],
        ))  # fmt: skip
    return alt.layer(*layers).resolve_scale(color="independent").properties(height=640)


# ---------------------------------------------------------------- the Posterior page

Q_COLOUR, Q_STAR_COLOUR, PRIOR_COLOUR = "black", "#d62728", "#7f7f7f"


def _ellipse_traces(mu, logvar, name: str, colour: str) -> list[dict]:
    """The 1σ (solid) and 2σ (dotted) ellipses of N(mu, diag exp(logvar)) as two line traces."""
    traces = []
    for n_std, dash in ((1, "solid"), (2, "dot")):
        ring = ex.sigma_ellipse(np.asarray(mu), np.asarray(logvar), n_std=n_std)
        traces.append(
            {
                "type": "scatter",
                "x": ring[:, 0],
                "y": ring[:, 1],
                "mode": "lines",
                "hoverinfo": "skip",
                "name": f"{name}: {n_std}σ",
                "line": {"color": colour, "width": 3 if n_std == 1 else 2, "dash": dash},
            }
        )
    return traces


def posterior_map(result, titles: tuple[str, str] = ("z[0]", "z[1]")) -> go.Figure:
    """One image's exact posterior p(z|x) on its grid (heat map of the density, contours of the regions
    holding 50/90/99% of its mass), the encoder's q and the refined q* (1σ and 2σ ellipses), and the
    prior's 1-3σ circles faintly; the view is the grid's window. `result` is a `gaps.ImageGaps`."""
    grid = result.grid
    z1, z2 = grid.z1.numpy(), grid.z2.numpy()
    log_post = grid.log_posterior.numpy().T  # (n2, n1): rows are z2, as the heat map draws them
    traces = [
        {
            "type": "heatmap",
            "x": z1,
            "y": z2,
            "z": np.exp(log_post).astype(np.float32),
            "colorscale": "Blues",
            "colorbar": {"title": {"text": "p(z|x)"}, "thickness": 12},
            "name": "p(z|x)",
            "hovertemplate": "z = (%{x:.3f}, %{y:.3f})<br>p(z|x) = %{z:.3g}<extra></extra>",
        }
    ]
    regions = "/".join(f"{mass:.0%}" for mass in gp.CREDIBLE_MASSES)
    for mass, level in zip(gp.CREDIBLE_MASSES, grid.credible_levels().tolist(), strict=True):
        traces.append(
            {
                "type": "contour",
                "x": z1,
                "y": z2,
                "z": log_post.astype(np.float32),
                "showscale": False,
                "contours": {"start": level, "end": level, "size": 1.0, "coloring": "none"},
                "hoverinfo": "skip",
                "line": {"color": "#08306b", "width": 1},
                "name": f"p(z|x): {regions} regions",
                "showlegend": mass == gp.CREDIBLE_MASSES[0],
            }
        )
    for n_std in (1, 2, 3):
        ring = ex.sigma_ellipse(np.zeros(2), np.zeros(2), n_std=n_std)
        traces.append(
            {
                "type": "scatter",
                "x": ring[:, 0],
                "y": ring[:, 1],
                "mode": "lines",
                "hoverinfo": "skip",
                "name": "prior p(z): 1-3σ",
                "showlegend": n_std == 1,
                "opacity": 0.5,
                "line": {"color": PRIOR_COLOUR, "width": 1, "dash": "dash"},
            }
        )
    traces += _ellipse_traces(result.mu, result.logvar, "q(z|x), encoder", Q_COLOUR)
    traces += _ellipse_traces(result.mu_refined, result.logvar_refined, "q*(z|x), refined", Q_STAR_COLOUR)
    low1, high1, low2, high2 = grid.window
    layout = {
        "height": 560,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
        "xaxis": {"title": {"text": titles[0]}, "range": [low1, high1], "showgrid": False, "zeroline": False},
        "yaxis": {"title": {"text": titles[1]}, "range": [low2, high2], "showgrid": False, "zeroline": False},
    }
    return go.Figure({"data": traces, "layout": layout})


def iwae_chart(result) -> go.Figure:
    """The IWAE bound against k (log axis) rising towards log p(x), with the ELBO of q and of q* as
    reference lines; `result` is a `gaps.ImageGaps`."""
    ks = list(result.ks)
    span = [min(ks), max(ks)]
    method = "quadrature on the grid" if result.log_px_method == "quadrature" else f"IWAE k={max(ks)}"
    lines = (
        (f"log p(x) ({method})", result.log_px, "#2ca02c", "solid"),
        ("ELBO* (refined q*)", result.elbo_refined, Q_STAR_COLOUR, "dash"),
        ("ELBO (encoder's q)", result.elbo, Q_COLOUR, "dot"),
    )
    traces = [
        {
            "type": "scatter",
            "x": ks,
            "y": result.iwae.tolist(),
            "mode": "lines+markers",
            "name": "IWAE bound, k samples",
            "line": {"color": "#1f77b4", "width": 3},
            "hovertemplate": "k = %{x}<br>%{y:.2f} nats<extra></extra>",
        }
    ]
    traces += [
        {
            "type": "scatter",
            "x": span,
            "y": [value, value],
            "mode": "lines",
            "name": name,
            "line": {"color": colour, "dash": dash, "width": 2},
            "hovertemplate": f"{name}: {value:.2f}<extra></extra>",
        }
        for name, value, colour, dash in lines
    ]
    layout = {
        "height": 360,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "xaxis": {"type": "log", "title": {"text": "k (importance samples)"}},
        "yaxis": {"title": {"text": "nats / image"}},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
    }
    return go.Figure({"data": traces, "layout": layout})


def gap_bar(result) -> go.Figure:
    """log p(x) − ELBO as one horizontal bar split into the amortisation gap (ELBO → ELBO*) and the
    approximation gap (ELBO* → log p(x)); `result` is a `gaps.ImageGaps`."""
    parts = (
        ("amortisation gap: ELBO* − ELBO", result.elbo, result.amortization_gap, "#ff7f0e"),
        ("approximation gap: log p(x) − ELBO*", result.elbo_refined, result.approximation_gap, "#9467bd"),
    )
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "y": ["gap"],
            "x": [width],
            "base": [base],
            "name": name,
            "marker": {"color": colour},
            "text": [f"{width:.2f}"],
            "textposition": "inside",
            "hovertemplate": f"{name}: {width:.3f} nats<extra></extra>",
        }
        for name, base, width, colour in parts
    ]
    layout = {
        "height": 170,
        "barmode": "overlay",
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "xaxis": {"title": {"text": "nats / image (ELBO on the left, log p(x) on the right)"}},
        "yaxis": {"showticklabels": False},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.5, "x": 0},
    }
    return go.Figure({"data": traces, "layout": layout})
