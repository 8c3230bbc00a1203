"""The fast paths of vae_core.fast against the textbook code of vae_core.objective, and their switch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_core import (
    VAE,
    ImageSet,
    RunSpec,
    TrainConfig,
    VAEConfig,
    bernoulli_nll,
    elbo_terms,
    fast,
    fit,
    iwae_bound,
)
from vae_core.evaluation import log_likelihood, score


def _logits_and_targets(dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits from confident to extreme (±200), and binary and grey targets of the same shape."""
    torch.manual_seed(0)
    logits = 6 * torch.randn(16, 1, 28, 28, dtype=dtype)
    logits[0, 0, 0, :4] = torch.tensor([200.0, -200.0, 50.0, -50.0], dtype=dtype)
    return logits, [torch.rand_like(logits).bernoulli(), torch.rand_like(logits)]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_fused_nll_and_its_gradient_equal_the_textbook_ones(dtype: torch.dtype, tolerance: float) -> None:
    """The fused Bernoulli NLL and its gradients in the logits and the targets equal
    objective.bernoulli_nll's through autograd, to 1e-6 relative in float32 (1e-10 in float64)."""
    logits, targets = _logits_and_targets(dtype)
    for x in targets:
        got_l, want_l = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        got_x, want_x = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, want = fast.fused_bernoulli_nll(got_l, got_x), bernoulli_nll(want_l, want_x)
        torch.testing.assert_close(got, want, rtol=tolerance, atol=0.0)
        weights = torch.rand(len(x), dtype=dtype)  # a per-image upstream gradient, as a batch mean has
        (got * weights).sum().backward()
        (want * weights).sum().backward()
        torch.testing.assert_close(got_l.grad, want_l.grad, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(got_x.grad, want_x.grad, rtol=tolerance, atol=tolerance)


def test_fused_nll_without_gradients_is_the_same_number() -> None:
    """Under no_grad the fused NLL skips its autograd Function and returns the same values."""
    logits, (x, _) = _logits_and_targets(torch.float32)
    with torch.no_grad():
        plain = fast.fused_bernoulli_nll(logits, x)
    assert torch.equal(plain, fast.fused_bernoulli_nll(logits.requires_grad_(), x).detach())


def test_fused_nll_gradient_passes_gradcheck() -> None:
    """The fused NLL's hand-written backward agrees with finite differences in float64."""
    logits, targets = _logits_and_targets(torch.float64)
    for x in targets:
        inputs = (logits[:2, :, :4, :4].clone().requires_grad_(), x[:2, :, :4, :4].clone().requires_grad_())
        assert torch.autograd.gradcheck(fast.fused_bernoulli_nll, inputs)


def test_the_switch_reads_vae_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """VAE_FAST unset or 1 turns the fast paths on, 0 gives the textbook NLL and autograd's step, and
    any other value is refused with the value named."""
    mlp = VAE(VAEConfig(arch="mlp", hidden=(16,), latent_dim=2))
    monkeypatch.delenv("VAE_FAST", raising=False)
    assert fast.enabled() and fast.nll() is fast.fused_bernoulli_nll and fast.writes_out_gradient(mlp)
    monkeypatch.setenv("VAE_FAST", "0")
    assert not fast.enabled() and fast.nll() is bernoulli_nll and not fast.writes_out_gradient(mlp)
    monkeypatch.setenv("VAE_FAST", "yes")
    with pytest.raises(ValueError, match=r"VAE_FAST must be 0 .* or 1 .*'yes'"):
        fast.enabled()


@pytest.mark.parametrize("value", ["0", "1"])
def test_fast_and_textbook_scores_agree(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """fast.elbo_terms, evaluation's scores and its IWAE estimate are the textbook numbers with the
    fast paths on or off (same noise), to float32 rounding."""
    monkeypatch.setenv("VAE_FAST", value)
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, hidden=(32,))).eval()
    x = torch.rand(40, 1, 28, 28).bernoulli()
    with torch.no_grad():
        torch.manual_seed(1)
        terms = fast.elbo_terms(model, x)
        torch.manual_seed(1)
        textbook = elbo_terms(model, x)
        torch.manual_seed(0)
        iwae = iwae_bound(model, x, k=8)
    torch.testing.assert_close(terms.recon, textbook.recon, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(terms.kl, textbook.kl)
    torch.testing.assert_close(score(model, x, seed=1).recon, textbook.recon, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(log_likelihood(model, x, 8, seed=0), iwae, rtol=1e-6, atol=0.0)


def test_the_trainer_takes_the_written_out_gradient_only_when_fast(
    tmp_path: Path, tiny_data: tuple[ImageSet, ImageSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ReLU MLP trains with MLPBackprop by default, and with autograd alone under VAE_FAST=0."""
    calls = []
    monkeypatch.setattr(fast.MLPBackprop, "__call__", _counting(fast.MLPBackprop.__call__, calls))
    model, train_config = (
        VAEConfig(arch="mlp", latent_dim=2, hidden=(16,)),
        TrainConfig(epochs=1, batch_size=128),
    )
    config = RunSpec(model=model, train=train_config)
    train, test = tiny_data
    fit(config, tmp_path / "fast", train_set=train, test_set=test, device="cpu")
    assert len(calls) == len(train.images) // 128
    monkeypatch.setenv("VAE_FAST", "0")
    fit(config, tmp_path / "textbook", train_set=train, test_set=test, device="cpu")
    assert len(calls) == len(train.images) // 128


def _counting(method, calls: list):
    def counted(self, *args, **kwargs):
        calls.append(1)
        return method(self, *args, **kwargs)

    return counted
