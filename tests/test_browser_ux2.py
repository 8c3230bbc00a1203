"""Deep links in a real browser (issue 21, point 9): which requests fail when a page's URL is opened.

Streamlit's frontend finds its server by trying the page's own path first: on /Sliders it asks for
/Sliders/_stcore/health and /Sliders/_stcore/host-config (404) before /_stcore/... (streamlit issue
7074, open). Those two probes are Streamlit's; anything else failing would be ours.
"""

from __future__ import annotations

import pytest

from tests.test_browser import PAGES, browser, page, screenshot_on_failure, server, settle  # noqa: F401

pytestmark = pytest.mark.browser
STREAMLIT_PROBES = ("/_stcore/health", "/_stcore/host-config")


def failed_requests(page, url: str, title: str) -> tuple[list[str], list[str]]:  # noqa: F811
    """The paths that answered 4xx/5xx and the console errors while `url` opens and settles."""
    failed, console = [], []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(url)
    settle(page, title)
    return failed, console


def test_home_page_requests_nothing_that_fails(server, page) -> None:  # noqa: F811
    """Opening the home page: no request fails and the console shows no error."""
    with screenshot_on_failure(page, "ux2-home-404"):
        failed, console = failed_requests(page, server, PAGES[""])
    assert failed == [] and not [c for c in console if "404" in c], (failed, console)


def test_deep_link_fails_only_streamlits_own_base_url_probes(server, page) -> None:  # noqa: F811
    """Opening /Sliders directly: the only failed requests are the frontend's two probes of
    /Sliders/_stcore/..., none from the app (pictures, links, components)."""
    with screenshot_on_failure(page, "ux2-sliders-404"):
        failed, _ = failed_requests(page, f"{server}/Sliders", PAGES["Sliders"])
    ours = [u for u in failed if not u.startswith(f"{server}/Sliders") or not u.endswith(STREAMLIT_PROBES)]
    assert ours == [], failed
    assert sorted(u.removeprefix(server) for u in failed) in (
        [],
        sorted(f"/Sliders{p}" for p in STREAMLIT_PROBES),
    )
