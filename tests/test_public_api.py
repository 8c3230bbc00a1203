"""The public surface of vae_core: a deliberate list of names, each importable and documented."""

from __future__ import annotations

import importlib
import inspect

import vae_core

SURFACE = sorted(
    [
        # the model and its config
        "VAE",
        "VAEConfig",
        # a run's spec (data + model + training); DataSpec and RunSpec arrive with the run-spec branch
        "DataSpec",
        "RunSpec",
        "TrainConfig",
        # checkpoints
        "CheckpointError",
        "list_checkpoints",
        "load_checkpoint",
        "save_checkpoint",
        # the objective
        "ElboTerms",
        "bernoulli_nll",
        "elbo_terms",
        "gaussian_kl",
        "iwae_bound",
        "reparameterize",
        # data
        "DATASETS",
        "DatasetError",
        "ImageSet",
        "load_images",
        # a user's own image
        "ImageError",
        "preprocess_image",
        # evaluation
        "Scores",
        "active_units",
        "eval_inputs",
        "kl_per_dim",
        "log_likelihood",
        "score",
        "summarize",
        # training
        "FitResult",
        "TrainingDiverged",
        "fit",
        # a run's metrics, read back
        "read_metrics",
    ]
)


def test_the_public_surface_is_the_deliberate_list() -> None:
    """vae_core.__all__ is exactly the expected names, sorted the same, without duplicates."""
    assert sorted(vae_core.__all__) == SURFACE
    assert len(set(vae_core.__all__)) == len(vae_core.__all__)


def test_every_public_name_imports_and_is_documented() -> None:
    """`from vae_core import *` gives every name, and the package and each of its classes and functions
    have a docstring."""
    assert inspect.getdoc(vae_core)
    namespace: dict = {}
    exec("from vae_core import *", namespace)
    for name in vae_core.__all__:
        obj = namespace[name]
        assert obj is getattr(vae_core, name), name
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_job_control_and_explore_helpers_live_in_their_modules() -> None:
    """Job control, the explorer's maths, maps, timelapses and the fast paths are imported from their
    own modules, not from vae_core itself."""
    for module, name in [
        ("vae_core.jobs", "start_run"),
        ("vae_core.jobs", "list_runs"),
        ("vae_core.explore", "pca_2d"),
        ("vae_core.projection", "project"),
        ("vae_core.timelapse", "load_timelapse"),
        ("vae_core.fast", "MLPBackprop"),
    ]:
        assert hasattr(importlib.import_module(module), name), (module, name)
        assert name not in vae_core.__all__, name
