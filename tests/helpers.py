"""Small helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Every page of the app as its URL path (the home page is "") and the title it shows.
PAGE_TITLES = {
    "": "VAE latent-space explorer",
    "Latent_grid": "Latent grid",
    "Sliders": "Sliders",
    "Interpolate": "Interpolate",
    "Compare": "Compare",
    "Atlas": "Atlas",
    "Encode": "Encode",
    "Posterior": "Posterior",
    "Train": "Train",
}


def pages_but(*left_out: str) -> dict[str, str]:
    """PAGE_TITLES without the pages a module tests on their own."""
    return {path: title for path, title in PAGE_TITLES.items() if path not in left_out}


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block (e.g. before a module's server starts), then restore
    each one as it was, unset ones unset."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
