"""URL state: every value a link carries is checked against the widget it feeds, and a hostile one is
ignored with a notice on every page, never a traceback."""

import math

import pytest
from streamlit.testing.v1 import AppTest

from explorer.state import Field, plain
from tests.test_app import DEFAULT, ROOT, make_checkpoint
from vae_core import projection as pj

pytestmark = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """The disk cache of scores and maps in a folder of this test session, not the project's, and no
    numba compilation behind the Atlas page (as in test_atlas_page)."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "url-cache"))
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())


# ---------------------------------------------------------------- Field.parse, the one reader


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        (Field(15, 2, 30), "7", 7),
        (Field(15, 2, 30), " 30 ", 30),
        (Field(1.0, 0.0, 2.0), "0.3", 0.3),
        (Field(1.0, 0.0, 2.0), "2", 2.0),
        (Field(200, 50, 500, step=50), "450", 450),
        (Field("slerp", choices=["linear", "slerp"]), "linear", "linear"),
        (Field(0, choices=[0, 1, 2]), "2", 2),
    ],
)
def test_values_the_widget_takes_are_read(field, text, value):
    """A value inside the widget's range, of its type and on its step, is read as that value."""
    parsed = field.parse(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("field", "text", "reason"),
    [
        (Field(15, 2, 30), "999", "above the largest value, 30"),
        (Field(15, 2, 30), "1", "below the smallest value, 2"),
        (Field(0, 0, 10**6), "-5", "below the smallest value, 0"),
        (Field(15, 2, 30), "7.5", "not a whole number"),
        (Field(15, 2, 30), "1e3", "not a whole number"),
        (Field(15, 2, 30), "9" * 5000, "longer than 100 characters"),
        (Field(0, 0, 10**6), "1" + "0" * 30, "above the largest value"),
        (Field(1.0, 0.0, 2.0), "inf", "not a finite number"),
        (Field(1.0, 0.0, 2.0), "-Infinity", "not a finite number"),
        (Field(1.0, 0.0, 2.0), "nan", "not a finite number"),
        (Field(3.0, 0.5, 6.0), "1e309", "not a finite number"),
        (Field(1.0, 0.0, 2.0), "two", "not a number"),
        (Field(200, 50, 500, step=50), "77", "not 50 plus a multiple of 50"),
        (Field("slerp", choices=["linear", "slerp"]), "cubic", "not one of linear, slerp"),
        (Field(0, choices=[0, 1, 2]), "3", "not one of 0, 1, 2"),
    ],
)
def test_values_the_widget_refuses_say_why(field, text, reason):
    """Out of range, of the wrong type, non-finite, off the step or not a choice: ValueError with why."""
    with pytest.raises(ValueError, match=reason):
        field.parse(text)


def test_clamp_moves_a_session_value_into_the_range():
    """A value set in the session outside the widget's (shrunk) range is moved to its nearest end."""
    field = Field(0, 0, 9)
    assert (field.clamp(12), field.clamp(-1), field.clamp(4)) == (9, 0, 4)
    assert Field("a", choices=["a", "b"]).clamp("c") == "a"
    assert not math.isnan(Field(1.0, 0.0, 2.0).clamp(1.5))


def test_plain_escapes_markdown():
    """User text shown in a notice keeps its backslashes and backticks instead of rendering them."""
    assert plain(r"a\b `c` *d*") == r"a\\b \`c\` \*d\*"


# ---------------------------------------------------------------- every page, opened by a hostile link


def opened(page: str | None, **query: str) -> AppTest:
    """The app opened at `page` with the query parameters, after its first run; no exception allowed."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update(query)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def notices(at: AppTest) -> str:
    return " ".join(t.value for t in at.toast)


HOSTILE = [
    (None, {"temperature": "inf", "seed": "-5", "recon_seed": "1e3"}),
    ("pages/1_Latent_grid.py", {"n": "999", "spacing": "range", "range": "1e309"}),
    ("pages/1_Latent_grid.py", {"n": "-3", "spacing": "diagonal", "mass": "nan"}),
    ("pages/2_Sliders.py", {"z": "nan,inf", "start": "everything", "start_img_nth": "99999999"}),
    ("pages/2_Sliders.py", {"z": "1e309,0"}),
    ("pages/3_Interpolate.py", {"steps": "1" + "0" * 30, "method": "cubic", "a_img_nth": "-1"}),
    ("pages/4_Compare.py", {"other": "../../etc/passwd", "compare_seed": "-5"}),
    ("pages/5_Atlas.py", {"atlas_method": "bogus", "atlas_seed": "-5", "atlas_marked": "999"}),
    ("pages/6_Encode.py", {"input": "camera", "ckpt": "/etc"}),
    ("pages/7_Train.py", {"ckpt": "`rm -rf`"}),
]


@pytest.mark.parametrize(("page", "query"), HOSTILE, ids=[f"{p or 'app'}:{','.join(q)}" for p, q in HOSTILE])
def test_hostile_link_values_are_ignored_with_a_notice(page, query, monkeypatch):
    """Each hostile value is ignored with a notice naming it, and the page renders without an exception."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(ROOT / ".cache" / "no-runs"))  # the Train page lists no runs
    at = opened(page, **query)
    said = notices(at)
    for key in query:
        if key in ("spacing",) and query[key] == "range":
            continue  # a valid value: it is read
        assert f"Ignored the link's {plain(key)} =" in said, (key, said)


def test_ignored_values_fall_back_to_the_defaults():
    """After a hostile link the widgets show their defaults, and the URL is rewritten with them."""
    at = opened("pages/1_Latent_grid.py", n="999", spacing="range", range="1e309")
    assert at.slider(key="n").value == 15 and at.radio(key="spacing").value == "range"
    assert at.slider(key="range").value == 3.0
    assert at.query_params["n"] == "15" and at.query_params["range"] == "3.0"


def test_a_valid_link_gives_no_notice():
    """A link whose values the widgets take restores them and says nothing."""
    at = opened("pages/3_Interpolate.py", steps="5", method="linear")
    assert at.slider(key="steps").value == 5 and at.radio(key="method").value == "linear"
    assert not at.toast


def test_hostile_dimension_choice_on_a_3d_model(tmp_path, monkeypatch):
    """A slice dimension beyond the model's is ignored; two equal ones are an error message, not a crash."""
    tiny = make_checkpoint(tmp_path / "tiny-3d", 3)
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = opened("pages/1_Latent_grid.py", ckpt=tiny, d0="7", through_seed="-1")
    assert "Ignored the link's d0 =" in notices(at)
    at = opened("pages/1_Latent_grid.py", ckpt=tiny, d0="1", d1="1")
    assert "two different dimensions" in at.error[0].value


def test_a_z_of_another_length_is_ignored_on_a_first_visit():
    """A 3-value z for a 2-D model is ignored with a notice and the sliders start at the origin."""
    at = opened("pages/2_Sliders.py", z="1,2,3")
    assert "2 latent dimensions" in notices(at)
    assert [at.slider(key=f"zs_{i}").value for i in range(2)] == [0.0, 0.0]


def test_a_copied_interpolation_link_reopens_the_same_endpoints():
    """The Interpolate page keeps its endpoints in the URL; a fresh session opened on that URL draws
    the same strip."""
    at = opened("pages/3_Interpolate.py")
    default_strip = at.image[0].proto.imgs[0].url
    at.selectbox(key="a_img_class").set_value("3").run()
    at.number_input(key="a_img_nth").set_value(4).run()
    link = dict(at.query_params)
    assert link["a"] == "test image (posterior mean)"
    assert (link["a_img_class"], link["a_img_nth"]) == ("3", "4")
    strip = at.image[0].proto.imgs[0].url
    assert strip != default_strip
    again = opened("pages/3_Interpolate.py", **link)
    assert not again.toast
    assert again.selectbox(key="a_img_class").value == "3" and again.number_input(key="a_img_nth").value == 4
    assert again.image[0].proto.imgs[0].url == strip
