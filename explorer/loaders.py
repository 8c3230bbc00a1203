"""Every cache of the app, and its start-up hook.

Caches are keyed by plain strings and numbers (a checkpoint's shown name and its files' mtime,
a dataset name, the data and disk-cache folders), never by hashing a model. `st.cache_resource` holds
models and the read-only image arrays shared by every session (no copy per rerun); `st.cache_data`
holds arrays computed from them (each caller gets its own copy, free to hand to torch). The test set
is scored once per model (`scores`), and every page that draws the 2-D map of a model with
latent_dim > 2 takes it from `pca_map`, so the map has one orientation everywhere. Slow maps (UMAP,
t-SNE) are computed into the disk cache by `map_job` in a background thread, so that no page waits.
One image's posterior story (`explanation`) is kept in a small store of its own that lets it report
progress.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from explorer import meta, paths
from explorer.paths import Checkpoint
from explorer.state import Z_RANGE
from vae_core import VAE, CheckpointError, DatasetError, ImageSet, load_checkpoint, load_images
from vae_core import explore as ex
from vae_core import gaps as gp
from vae_core import onnx_model as om
from vae_core import projection as pj
from vae_core.checkpoint import MODEL_FILE, read_spec
from vae_core.data import FOLDER, data_root
from vae_core.preprocess import preprocess

if TYPE_CHECKING:
    import torch

Z_QUANTILES = (0.005, 0.995)  # a Sliders range spans where 99% of the test set's posterior means lie,
Z_WIDEN = 0.1  # widened by this fraction of its span on each side; an inactive dimension (by its
PRIOR_SPAN = 3.0  # stored KL) gets ±3 prior standard deviations instead,
MIN_SPAN = 0.5  # as does one whose means span less, when the checkpoint stores no KL per dimension
TRAIN_POINTS = 10_000  # training images the Atlas places on its map (transformed, not fitted)
Params = tuple[tuple[str, float], ...]  # a projection's parameters as a cache key: sorted (name, value)
Where = tuple[str | None, str, str]  # cache key: --data-dir, $VAE_DATA_DIR or data/, the disk cache folder


@dataclass(frozen=True)
class TestSet:
    """A dataset's test split for display: images uint8 (N, C, H, W), labels (N,), class names.

    `name` is the data's cache key (`meta.data_key`): a named set's name, or a folder's spec as JSON."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@st.cache_resource(show_spinner=False)
def start_once() -> bool:
    """Process-wide start-up work, done on the first page view (never at import).

    Interactive decodes are a few milliseconds of small matrix products: one torch thread per call is
    faster than two fighting over a busy CPU and keeps concurrent sessions from oversubscribing it.
    UMAP's numba kernels take 30-40 s to compile on first use: that starts now in the background, so
    the Atlas page does not wait for it ($VAE_WARM_UP_UMAP=0 skips it)."""
    import torch

    torch.set_num_threads(1)
    if os.environ.get("VAE_WARM_UP_UMAP", "1") != "0":
        pj.warm_up_umap()
    return True


# ---------------------------------------------------------------- models and data


@st.cache_resource(max_entries=6, show_spinner="Loading the model…")
def load_model(name: str, mtime: float) -> VAE:
    """The model of a checkpoint; `mtime` is only a cache key, so a retrained file is reloaded.
    (A conv model comes with channels-last weights, the layout oneDNN's CPU convolutions run fastest
    in: `vae_core.VAE` puts them so.)"""
    return load_checkpoint(paths.resolve(name))


def model(ck: Checkpoint) -> VAE:
    return load_model(ck.name, ck.mtime)


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.setflags(write=False)  # shared by every session: no page may change it in place
    return arrays


def _split(key: str, split: str, data_dir: str | None) -> ImageSet:
    """One split of the data a `meta.data_key` names: a folder from its import cache, a named set from
    its files (never downloaded here)."""
    data = meta.data_spec(key)
    if data.name != FOLDER:
        return load_images(data.name, split, data_dir=data_dir, download=False)
    if not data.folder:
        raise DatasetError(f"This model names no folder of images for its {FOLDER!r} dataset.")
    return load_images(FOLDER, split, data.folder, **data.folder_options())


@st.cache_resource(max_entries=4, show_spinner="Reading the test set…")
def _test_arrays(name: str, where: Where) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One read-only copy per server (st.cache_data would unpickle its 8 MB on every rerun), and the
    class names."""
    test = _split(name, "test", where[0])
    return (*_read_only(test.images.numpy(), test.labels.numpy()), test.classes)


def test_set(name: str) -> TestSet:
    """The test split of a dataset (by its `meta.data_key`); raises DatasetError when its files are not
    found."""
    return TestSet(name, *_test_arrays(name, _where()))


def _where() -> Where:
    """Where data and disk caches are read now (the lookups read the environment themselves: these
    are cache keys, so that a changed folder is not served from memory)."""
    return paths.data_dir(), str(data_root()), str(pj.cache_dir())


@st.cache_resource(max_entries=2, show_spinner=False)
def _train_images(name: str, where: Where) -> np.ndarray:
    """The first TRAIN_POINTS training images, uint8 (N, 1, H, W), read-only."""
    train = _split(name, "train", where[0])
    return _read_only(train.images[:TRAIN_POINTS].numpy())[0]


def folder_mtime(folder: Path) -> float:
    """A checkpoint's cache key: its model file's mtime, or the latest of an ONNX folder's three files."""
    return om.folder_mtime(folder) if om.is_onnx_folder(folder) else os.stat(folder / MODEL_FILE).st_mtime


@st.cache_data(max_entries=64, show_spinner=False)
def _dataset_of(name: str, mtime: float) -> str | None:
    folder = paths.resolve(name)
    try:
        if om.is_onnx_folder(folder):
            return om.read_manifest(folder).dataset or None
        return read_spec(folder).data.name
    except (OSError, CheckpointError):
        return None  # the picker shows it anyway; loading it says what is wrong


def dataset_of(name: str) -> str | None:
    """The dataset a checkpoint (by its shown name) was trained on, without keeping its model in
    memory; None if it cannot be read."""
    try:
        mtime = folder_mtime(paths.resolve(name))
    except OSError:
        return None
    return _dataset_of(name, mtime)


def model_inputs(ck: Checkpoint, test: TestSet, indices: np.ndarray | list[int]) -> torch.Tensor:
    """The model's inputs for some test images (binarised once with a fixed seed for 'dynamic')."""
    images = test.images[np.asarray(indices, dtype=np.int64)]
    return pj.model_inputs(images, meta.binarization(model(ck)))


@st.cache_data(max_entries=16, show_spinner=False)
def preprocessed(data: bytes, image_shape: tuple[int, ...], dataset: str) -> torch.Tensor:
    """The (1, C, H, W) image a model of this shape and dataset sees of an uploaded or drawn picture
    (`vae_core.preprocess.preprocess`); raises ImageError (not cached) for unusable input."""
    return preprocess(data, tuple(image_shape), dataset)


# ---------------------------------------------------------------- per-image scores: one cache for every page


@st.cache_data(max_entries=8, show_spinner="Scoring the test set…")
def _scores(name: str, mtime: float, dataset: str, split: str, where: Where) -> dict:
    images = _test_arrays(dataset, where)[0] if split == "test" else _train_images(dataset, where)
    m = load_model(name, mtime)
    key = pj.cache_key(paths.resolve(name), split, "scores")
    return pj.cached_scores(key, lambda: pj.score_images(m, images, meta.binarization(m)))


def scores(ck: Checkpoint, test: TestSet, split: str = "test") -> dict[str, np.ndarray]:
    """Per-image scores of the test split (or the first TRAIN_POINTS training images, split="train"),
    from the disk cache when there: mu, logvar (N, D); recon, kl, elbo (N,) in nats per image."""
    return _scores(ck.name, ck.mtime, test.name, split, _where())


@st.cache_data(max_entries=8, show_spinner=False)
def _z_ranges(name: str, mtime: float, dataset: str, where: Where) -> np.ndarray:
    mu = _scores(name, mtime, dataset, "test", where)["mu"]  # (N, D)
    lo, hi = np.quantile(mu.astype(np.float64), Z_QUANTILES, axis=0)  # (D,) each
    lo, hi = lo - Z_WIDEN * (hi - lo), hi + Z_WIDEN * (hi - lo)
    kl = load_model(name, mtime).meta.metrics.get("kl_per_dim")
    unused = ex.kl_order(kl)[1] if kl else hi - lo < MIN_SPAN  # inactive: the decoder ignores them
    lo[unused], hi[unused] = -PRIOR_SPAN, PRIOR_SPAN
    return np.round(np.clip(np.stack([lo, hi], 1), -Z_RANGE, Z_RANGE), 2)


def z_ranges(ck: Checkpoint, test: TestSet) -> np.ndarray:
    """The Sliders page's range of each latent dimension (D, 2): its test set posterior means' 0.5% to
    99.5% quantiles widened by Z_WIDEN, or ±PRIOR_SPAN for an inactive dimension, within ±Z_RANGE."""
    return _z_ranges(ck.name, ck.mtime, test.name, _where())


def prior_ranges(latent_dim: int) -> np.ndarray:
    """±PRIOR_SPAN for every dimension (D, 2): the Sliders page's ranges without a test set."""
    return np.tile([-PRIOR_SPAN, PRIOR_SPAN], (latent_dim, 1))


@st.cache_data(max_entries=6, show_spinner=False)
def _csv(name: str, mtime: float, dataset: str, where: Where) -> bytes:
    test = TestSet(dataset, *_test_arrays(dataset, where))
    mu = _scores(name, mtime, dataset, "test", where)["mu"]
    frame = pd.DataFrame(mu, columns=[f"mu_{i}" for i in range(mu.shape[1])])
    frame.insert(0, "class", [test.classes[int(c)] for c in test.labels])
    frame.insert(0, "label", test.labels)
    return frame.to_csv(index_label="index").encode()


def test_set_csv(ck: Checkpoint, test: TestSet) -> bytes:
    """The encoded test set as CSV: index, label, class, mu_0 … mu_{D-1}."""
    return _csv(ck.name, ck.mtime, test.name, _where())


# ---------------------------------------------------------------- 2-D maps


def projection_key(ck: Checkpoint, split: str, method: str, seed: int, params: dict) -> str:
    """The disk-cache key of a map (see `vae_core.projection.cache_key`)."""
    return pj.cache_key(ck.path, split, method, seed=seed, **params)


def is_projected(ck: Checkpoint, split: str, method: str, seed: int, params: dict) -> bool:
    """Whether that map is on disk already (a slow method then costs no wait)."""
    return pj.is_cached(projection_key(ck, split, method, seed, params))


@st.cache_data(max_entries=16, show_spinner=False)
def _projection_arrays(
    name: str, mtime: float, dataset: str, split: str, method: str, seed: int, params: Params, where: Where
) -> dict[str, np.ndarray]:
    mu = _scores(name, mtime, dataset, "test", where)["mu"]
    extra = _scores(name, mtime, dataset, "train", where)["mu"] if split == "test+train" else None
    compute = lambda: pj.project(mu, method, seed=seed, extra=extra, **dict(params)).arrays()  # noqa: E731
    return pj.cached(projection_key(Checkpoint(name, mtime), split, method, seed, dict(params)), compute)


def projection(
    ck: Checkpoint,
    test: TestSet,
    split: str = "test",
    method: str = "pca",
    seed: int = 0,
    params: dict | None = None,
) -> pj.Projection:
    """A 2-D map of the posterior means of the test split ("test") or of it and the first TRAIN_POINTS
    training images ("test+train": train rows after the test rows), from the disk cache when there."""
    key = (ck.name, ck.mtime, test.name, split, method, int(seed), tuple(sorted((params or {}).items())))
    arrays = _projection_arrays(*key, _where())
    mu = scores(ck, test)["mu"]
    if split == "test+train":
        mu = np.concatenate([mu, scores(ck, test, "train")["mu"]])
    return pj.Projection.from_arrays(method, arrays, mu)


# ---------------------------------------------------------------- slow maps, computed in the background


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"  # the map is in the disk cache
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class MapJob:
    """A slow map (UMAP, t-SNE) computed into the disk cache by a daemon thread of the server, so that
    no session waits on it: pages poll `state` and `fraction`, and `cancel` stops it at its next report.
    Shared by every session that asks for the same map."""

    key: str
    fraction: float = 0.0  # of the fit done, as the method reports it (UMAP reports only its end)
    state: JobState = JobState.RUNNING
    message: str = ""  # why it failed
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    def report(self, fraction: float) -> bool:
        """The projection's progress callback: remember how far it is; True asks it to stop."""
        self.fraction = fraction
        return self._cancel.is_set()

    def run(self, compute: Callable[[Callable[[float], bool]], dict[str, np.ndarray]]) -> None:
        try:
            pj.cached(self.key, lambda: compute(self.report))
            self.state = JobState.DONE
        except pj.Cancelled:
            self.state = JobState.CANCELLED
        except Exception as e:  # the thread's end: whatever went wrong is shown, never left running
            self.message, self.state = f"{type(e).__name__}: {e}", JobState.FAILED


@st.cache_resource(show_spinner=False)
def _map_jobs() -> tuple[threading.Lock, dict[str, MapJob]]:
    """The server's map jobs by disk-cache key, and the lock that guards them."""
    return threading.Lock(), {}


def map_job(
    ck: Checkpoint, test: TestSet, split: str, method: str, seed: int, params: dict, *, again: bool = False
) -> MapJob:
    """The background computation of that map (see `projection`): the running or last one, else a new
    one; a cancelled or failed one stays so until asked `again`. Starting one cancels the map this
    session started before, if it is still running (moving a slider does not pile up fits)."""
    key = projection_key(ck, split, method, seed, params)
    lock, jobs = _map_jobs()
    with lock:
        job = jobs.get(key)
        stale = job is not None and job.state is JobState.DONE and not pj.is_cached(key)  # cache emptied
        if job is None or stale or (again and job.state in (JobState.CANCELLED, JobState.FAILED)):
            job = jobs[key] = _start(key, _fit(ck, test, split, method, seed, params))
            mine = jobs.get(st.session_state.get("_map_job", ""))
            if mine is not None and mine is not job:
                mine.cancel()
            st.session_state["_map_job"] = key
    return job


def _fit(ck: Checkpoint, test: TestSet, split: str, method: str, seed: int, params: dict) -> Callable:
    """The fit of a map as a function of its progress callback, on arrays read now (in the session)."""
    mu = scores(ck, test)["mu"]
    extra = scores(ck, test, "train")["mu"] if split == "test+train" else None

    def fit(progress: Callable[[float], bool]) -> dict[str, np.ndarray]:
        if method == "umap" and (warm_up := pj.warm_up_umap()).is_alive():
            warm_up.join()  # numba compiles once per server
        return pj.project(mu, method, seed=seed, extra=extra, progress=progress, **params).arrays()

    return fit


def _start(key: str, fit: Callable) -> MapJob:
    job = MapJob(key)
    threading.Thread(target=job.run, args=(fit,), name=f"map-{key[-40:]}", daemon=True).start()
    return job


def pca_map(ck: Checkpoint, test: TestSet) -> pj.Projection | None:
    """THE map of a model with latent_dim > 2, on every page that draws one: the PCA of the test set's
    posterior means (the Atlas's "PCA" map). None for a 2-D model: its latent plane is the map."""
    return None if model(ck).config.latent_dim == 2 else projection(ck, test)


@st.cache_data(max_entries=8, show_spinner=False)
def _lattice(
    name: str,
    mtime: float,
    dataset: str,
    split: str,
    method: str,
    seed: int,
    params: Params,
    n: int,
    where: Where,
) -> pd.DataFrame:
    ck, test = Checkpoint(name, mtime), TestSet(dataset, *_test_arrays(dataset, where))
    fitted = projection(ck, test, split, method, seed, dict(params))
    cells = pj.lattice(fitted.coords, n)
    z = fitted.inverse(np.stack([cells["cx"], cells["cy"]], 1))  # (n², latent_dim)
    position = [f"({x:.2f}, {y:.2f})" for x, y in zip(cells["cx"], cells["cy"], strict=True)]
    return pd.DataFrame(
        {**cells, "image": pj.data_uris(ex.decode_images(model(ck), z)), "decoded here": position}
    )


def lattice(
    ck: Checkpoint, test: TestSet, split: str, method: str, seed: int, params: dict, n: int
) -> pd.DataFrame:
    """n × n cells over a map (edges x, x2, y, y2; centres cx, cy), each with the image decoded at its
    centre as a data URI and its position as text: the Atlas's hover and click targets."""
    key = (ck.name, ck.mtime, test.name, split, method, int(seed), tuple(sorted(params.items())), n)
    return _lattice(*key, _where())


@st.cache_data(max_entries=2, show_spinner=False)
def _thumbnails(dataset: str, where: Where) -> np.ndarray:
    images = _test_arrays(dataset, where)[0]
    return pj.cached(f"thumbnails|{dataset}|{len(images)}", lambda: {"uri": pj.data_uris(images)})["uri"]


def thumbnails(test: TestSet) -> np.ndarray:
    """Every test image as a PNG data URI (N,), for tooltips."""
    return _thumbnails(test.name, _where())


# ---------------------------------------------------------------- one image's posterior (the Posterior page)

EXPLAINED = 32  # images whose posterior story is kept in memory, shared by every session


@st.cache_resource(show_spinner=False)
def _explained() -> tuple[OrderedDict, threading.Lock]:
    """The store of `explanation`: a dict from plain keys to results, oldest first, and its lock.

    A store rather than st.cache_data, so that the computation can report its progress to the page
    (a cached function would replay or lose the progress bar's updates)."""
    return OrderedDict(), threading.Lock()


def image_key(data: bytes) -> str:
    """The cache key of a picture's bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def explanation(
    ck: Checkpoint,
    image: str,
    x: torch.Tensor,
    *,
    n: int,
    steps: int,
    progress: Callable[[float, str], None] | None = None,
) -> gp.ImageGaps:
    """`vae_core.gaps.explain` of model input x (1, C, H, W), computed once per (checkpoint and its
    mtime, image key, n, steps): `image` names the picture ("<dataset>/test/<index>" or `image_key`)."""
    key = (ck.name, ck.mtime, image, int(n), int(steps))
    store, lock = _explained()
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    result = gp.explain(model(ck), x, n=n, steps=steps, progress=progress)
    with lock:
        store[key] = result
        while len(store) > EXPLAINED:
            store.popitem(last=False)
    return result
