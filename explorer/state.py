"""What pages hand each other, and the URL state, behind typed accessors instead of string keys.

Handed between pages (in `st.session_state`): the current checkpoint, the Sliders page's point z, the
digit encoded on the Encode page, the Interpolate page's endpoints, the Atlas's clicked position
(kept with the map it was clicked on), and a picture sent to the Posterior page.

URL state: a widget that a link may set is drawn through `slider`, `number_input`, `toggle` or
`choice`, which seed it once per visit from the query parameter of its key. `Field.parse` is the one
place a URL value is read: it is checked against what the widget accepts (type, range, step,
choices; finite numbers only), and a value the widget cannot take is ignored with a small notice,
never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from explorer.paths import Checkpoint

MAX_SEED = 10**6  # the largest seed a seed box offers
Z_RANGE = 5.0  # the Sliders page's sliders span [-Z_RANGE, Z_RANGE]
Z_KEY = "zs_{}"  # the Sliders page's widget of each latent dimension
ORIGIN, PRIOR, TEST_IMAGE = "origin", "random prior sample", "test image (posterior mean)"
SOURCES = (ORIGIN, PRIOR, TEST_IMAGE)  # where a latent point can come from (see widgets.latent_input)
ENCODED = "your digit (posterior mean)"  # a further source once the Encode page has encoded a digit
ENDPOINTS = {"A": "a", "B": "b"}  # the Interpolate page's two endpoints and their latent_input keys
_SHOWN_CHARS = 40  # of a refused URL value, in the notice
_MAX_CHARS = 100  # a longer URL value is refused unread
_BOOLS = {"true": True, "false": False, "True": True, "False": False}  # a toggle's URL values


# ---------------------------------------------------------------- URL state


@dataclass(frozen=True)
class Field:
    """What a widget accepts, to check a value that comes from the URL: the default's type (int,
    float or str), and an inclusive range [lo, hi] with an optional int step, or a list of choices."""

    default: object
    lo: float | None = None
    hi: float | None = None
    step: int | None = None
    choices: Sequence | None = None

    def parse(self, text: str) -> object:
        """The value `text` stands for; ValueError saying why the widget cannot take it."""
        if len(text) > _MAX_CHARS:
            raise ValueError(f"it is longer than {_MAX_CHARS} characters")
        value = self._typed(text.strip())
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"it is not one of {', '.join(map(str, self.choices))}")
        if self.lo is not None and value < self.lo:
            raise ValueError(f"it is below the smallest value, {self.lo}")
        if self.hi is not None and value > self.hi:
            raise ValueError(f"it is above the largest value, {self.hi}")
        if self.step and (value - (self.lo or 0)) % self.step:
            raise ValueError(f"it is not {self.lo or 0} plus a multiple of {self.step}")
        return value

    def _typed(self, text: str) -> object:
        kind = type(self.default)
        if kind is bool:  # before int: a bool is an int too
            if text not in _BOOLS:
                raise ValueError("it is not true or false")
            return _BOOLS[text]
        if kind is int:
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError("it is not a whole number")
            return int(text)
        if kind is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError("it is not a number") from None
            if not math.isfinite(value):
                raise ValueError("it is not a finite number")
            return value
        return text

    def clamp(self, value: object) -> object:
        """A value already in the session moved into [lo, hi], or the default when it is not one of the
        choices (the widget's range or options may have changed since it was set)."""
        if self.choices is not None and value not in self.choices:
            return self.default
        if self.lo is not None and value < self.lo:
            return type(self.default)(self.lo)
        if self.hi is not None and value > self.hi:
            return type(self.default)(self.hi)
        return value


def shorten(text: str, limit: int = _SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str) -> str:
    """User text shown as itself in Markdown: Markdown's special characters escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>$:])", r"\\\1", text)


def notice(key: str, text: str, reason: str) -> None:
    """A small notice that the link's value of `key` was ignored, and why."""
    message = f"Ignored the link's {shorten(key)} = {shorten(text)}: {shorten(reason, 2 * _SHOWN_CHARS)}."
    st.toast(plain(message), icon=":material/link_off:")


def from_url(key: str, field: Field) -> None:
    """Seed widget `key` once per visit from the query parameter of the same name, if the widget can
    take it, else with `field.default`; a value already in the session is kept (clamped to the range)."""
    if key in st.session_state:
        if (clamped := field.clamp(st.session_state[key])) != st.session_state[key]:
            st.session_state[key] = clamped
        return
    value = field.default
    if key in st.query_params:
        text = st.query_params[key]
        try:
            value = field.parse(text)
        except ValueError as e:
            notice(key, text, str(e))
    st.session_state[key] = value


def to_url(**params: object) -> None:
    """Keep a page's main settings in the URL so that the view can be shared and reopened."""
    st.query_params.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()})


def slider(label: str, lo: float, hi: float, *, key: str, default: float, where=st, **kwargs) -> float:
    """`where.slider(label, lo, hi, key=key, ...)`, seeded from the URL within [lo, hi]."""
    int_step = kwargs.get("step") if isinstance(kwargs.get("step"), int) else None
    from_url(key, Field(default, lo, hi, step=int_step))
    return where.slider(label, lo, hi, key=key, **kwargs)


def number_input(label: str, lo: float, hi: float, *, key: str, default: float, where=st, **kwargs) -> float:
    """`where.number_input(label, lo, hi, key=key, ...)`, seeded from the URL within [lo, hi]."""
    from_url(key, Field(default, lo, hi))
    return where.number_input(label, lo, hi, key=key, **kwargs)


def toggle(label: str, *, key: str, default: bool, where=st, **kwargs) -> bool:
    """`where.toggle(label, key=key, ...)`, seeded from the URL with true or false."""
    from_url(key, Field(default))
    return where.toggle(label, key=key, **kwargs)


def choice(widget: Callable, label: str, options: Sequence, *, key: str, default: object, **kwargs) -> object:
    """`widget(label, options, key=key, ...)` (st.radio, st.selectbox, ...), seeded from the URL
    with one of `options`."""
    from_url(key, Field(default, choices=list(options)))
    return widget(label, options, key=key, **kwargs)


def seed_from_url(key: str, default: int = 0) -> int:
    """A seed with no widget of its own (a button draws the next one): from the URL once, within
    [0, MAX_SEED]; returns its current value."""
    from_url(key, Field(default, 0, MAX_SEED))
    return int(st.session_state[key])


def bump(key: str) -> None:
    """Button callback: a new seed."""
    st.session_state[key] = int(st.session_state.get(key, 0)) + 1


# ---------------------------------------------------------------- the current checkpoint

CHECKPOINT, PICKER = "checkpoint", "_ckpt_widget"


def current_checkpoint(options: list[str], startup: str | None, default: str) -> str:
    """Deep link (?ckpt=), else this session's choice, else the start-up choice, else the default."""
    linked = st.query_params.get("ckpt")
    if linked is not None and linked not in options:
        notice("ckpt", linked, "there is no such checkpoint")
    for candidate in (linked, st.session_state.get(CHECKPOINT), startup):
        if candidate in options:
            return candidate
    return default if default in options else options[0]


def use_checkpoint(name: str) -> None:
    """Make `name` the session's checkpoint, in the picker and in the URL."""
    st.session_state[CHECKPOINT] = st.session_state[PICKER] = st.query_params["ckpt"] = name


def on_pick() -> None:
    """The picker's callback: its choice becomes the session's checkpoint."""
    st.session_state[CHECKPOINT] = st.query_params["ckpt"] = st.session_state[PICKER]


# ---------------------------------------------------------------- the Sliders page's point z


def set_z(ck: Checkpoint, z: Sequence[float]) -> None:
    """Make z the current point of the Sliders page (its widgets pick it up when next drawn)."""
    st.session_state["z"] = [round(float(np.clip(v, -Z_RANGE, Z_RANGE)), 3) for v in z]
    st.session_state["z_ckpt"] = ck.name
    for i, v in enumerate(st.session_state["z"]):
        st.session_state[Z_KEY.format(i)] = v


def current_z(ck: Checkpoint, latent_dim: int) -> list[float]:
    """The Sliders page's point: this session's, else the `z` query parameter, else the origin."""
    if st.session_state.get("z_ckpt") != ck.name or len(st.session_state.get("z", [])) != latent_dim:
        first_visit = "z_ckpt" not in st.session_state
        set_z(ck, _z_from_url(latent_dim, first_visit) or [0.0] * latent_dim)
    for i, v in enumerate(st.session_state["z"]):
        st.session_state.setdefault(Z_KEY.format(i), v)
    return st.session_state["z"]


def _z_from_url(latent_dim: int, first_visit: bool) -> list[float] | None:
    """z from `?z=0.1,-2,...` when it has latent_dim values each in [-Z_RANGE, Z_RANGE], else None."""
    text = st.query_params.get("z")
    if text is None:
        return None
    field = Field(0.0, -Z_RANGE, Z_RANGE)
    try:
        z = [field.parse(v) for v in text.split(",")]
    except ValueError as e:
        notice("z", text, str(e))
        return None
    if len(z) != latent_dim:
        if first_visit:  # later, a z of another checkpoint's size is only the URL of the last one
            notice("z", text, f"this model has {latent_dim} latent dimensions")
        return None
    return z


def slider_z(latent_dim: int) -> list[float]:
    """The Sliders page's point as its widgets now hold it, kept as the current point."""
    st.session_state["z"] = [st.session_state[Z_KEY.format(i)] for i in range(latent_dim)]
    return st.session_state["z"]


# ---------------------------------------------------------------- the digit of the Encode page


def remember_encoded(ck: Checkpoint, mu: Sequence[float]) -> None:
    """Offer the posterior mean of a digit encoded on the Encode page as a source on the other pages."""
    st.session_state["encoded_digit"] = {"ckpt": ck.name, "mu": [float(v) for v in mu]}


def encoded(ck: Checkpoint) -> np.ndarray | None:
    """The last encoded digit's posterior mean under this checkpoint, if any."""
    digit = st.session_state.get("encoded_digit")
    return np.asarray(digit["mu"], np.float32) if digit and digit["ckpt"] == ck.name else None


# ---------------------------------------------------------------- the Atlas's decoded position

DECODE = "atlas_decode"


def set_decode_position(map_key: str, where: Sequence[float]) -> None:
    """Remember a clicked map position (x, y) of the map `map_key` (method, parameters, split and
    checkpoint, as `loaders.projection_key`), to decode it."""
    st.session_state[DECODE] = {"map": map_key, "at": [float(v) for v in where]}


def decode_position(map_key: str) -> list[float] | None:
    """The clicked position to decode, if it was clicked on this very map: a position on another
    projection (or another checkpoint's map) means nothing here, so it is forgotten."""
    clicked = st.session_state.get(DECODE)
    if clicked and clicked["map"] != map_key:
        del st.session_state[DECODE]
        return None
    return clicked["at"] if clicked else None


# ---------------------------------------------------------------- the Interpolate page's endpoints


def set_endpoint(end: str, test_index: int | None = None) -> None:
    """Make the Interpolate page's endpoint `end` ("A" or "B") test image `test_index`, or the
    digit encoded on the Encode page when no index is given (its widgets pick it up when next drawn)."""
    key = ENDPOINTS[end]
    if test_index is None:
        st.session_state[key] = ENCODED
        return
    st.session_state[key] = TEST_IMAGE
    st.session_state[f"{key}_img_class"] = "any"
    st.session_state[f"{key}_img_nth"] = int(test_index)


# ---------------------------------------------------------------- an image sent to the Posterior page

SENT_IMAGE = "image from the Encode page"  # a further source of the Posterior page once one was sent
POSTERIOR_SOURCE = "post_source"  # the Posterior page's source radio


def send_image(data: bytes, name: str) -> None:
    """Hand a picture (its file bytes) to the Posterior page and make it that page's source."""
    st.session_state["sent_image"] = {"data": bytes(data), "name": name}
    st.session_state[POSTERIOR_SOURCE] = SENT_IMAGE


def sent_image() -> tuple[bytes, str] | None:
    """The picture last sent to the Posterior page in this session, and its name, if any."""
    sent = st.session_state.get("sent_image")
    return (sent["data"], sent["name"]) if sent else None
