"""The written-out gradient of ReLU MLP VAEs against autograd, its reference implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_core import VAE, ImageSet, RunSpec, TrainConfig, VAEConfig, elbo_terms, fit, training
from vae_core.fast import MLPBackprop, bf16

MLPS = [
    VAEConfig(arch="mlp", latent_dim=20, hidden=(400,)),
    VAEConfig(arch="mlp", latent_dim=1, hidden=(16,)),
    VAEConfig(arch="mlp", latent_dim=3, hidden=(64, 32, 16)),
]


def autograd_step(model: VAE, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, list]:
    terms = elbo_terms(model, x)
    model.zero_grad(set_to_none=True)
    terms.loss(beta).backward()
    return terms.recon.detach(), terms.kl.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("config", MLPS, ids=["784-400-20", "latent-1", "three-hidden"])
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("binary", [True, False], ids=["binary-x", "grey-x"])
def test_gradients_and_terms_match_autograd(config: VAEConfig, beta: float, binary: bool) -> None:
    """In float64, with the same noise, every parameter's gradient and each image's recon and KL
    equal autograd's through elbo_terms to rounding."""
    torch.manual_seed(0)
    model = VAE(config).double()
    x = torch.rand(9, 1, 28, 28, dtype=torch.float64)
    x = x.bernoulli() if binary else x
    torch.manual_seed(1)
    recon, kl, expected = autograd_step(model, x, beta)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    got_recon, got_kl = MLPBackprop(model)(x, beta)
    torch.testing.assert_close(got_recon, recon, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(got_kl, kl, rtol=1e-12, atol=1e-12)
    for (name, p), g in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-13, msg=name)


def test_gradients_are_overwritten_not_accumulated() -> None:
    """A second call leaves the gradient of its own batch, as zero_grad + backward would."""
    torch.manual_seed(0)
    model = VAE(MLPS[1]).double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    step = MLPBackprop(model)
    torch.manual_seed(2)
    step(x, 1.0)
    first = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(2)
    step(x, 1.0)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), first, strict=True))


def test_only_relu_mlps_are_supported() -> None:
    """Other activations and the conv architecture stay with autograd; asking anyway is an error."""
    assert MLPBackprop.supports(VAE(MLPS[0]))
    for config in (VAEConfig(arch="mlp", activation="tanh"), VAEConfig(arch="conv", hidden=(8, 16))):
        assert not MLPBackprop.supports(VAE(config))
        with pytest.raises(ValueError, match="needs an mlp VAE with relu"):
            MLPBackprop(VAE(config))


def test_training_matches_the_autograd_trainer(
    tmp_path: Path, tiny_data: tuple[ImageSet, ImageSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two epochs with the written-out gradient end at the weights autograd's trainer reaches from the
    same seed (same noise, same batches), up to float32 rounding."""
    config = RunSpec(model=MLPS[2], train=TrainConfig(epochs=2, batch_size=64, log_every=4, beta=0.5))
    train, test = tiny_data
    explicit = fit(config, tmp_path / "a", train_set=train, test_set=test, device="cpu")
    monkeypatch.setenv("VAE_FAST", "0")  # the textbook path: autograd through objective.elbo_terms
    taped = fit(config, tmp_path / "b", train_set=train, test_set=test, device="cpu")
    for p, q in zip(explicit.model.parameters(), taped.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert explicit.metrics["elbo"] == pytest.approx(taped.metrics["elbo"], abs=1e-3)


def bf16_step(kind: str, model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """One mixed-precision step, written out or through autograd under autocast: recon, gradients."""
    if kind == "written-out":
        recon, _ = MLPBackprop(model, torch.bfloat16)(x, 1.0)
    else:
        recon, kl = training._Objective(model, torch.bfloat16)(x)
        model.zero_grad(set_to_none=True)
        (recon + kl).mean().backward()
    return recon, [p.grad for p in model.parameters()]


# How the written-out step gets bfloat16 products on a CPU: as this CPU's probe decides (what training
# does), by casting its operands (forced), or left to oneDNN's kernels (only where they round).
ROUNDING = {"probed": None, "cast": False, "in-kernel": True}
IN_KERNEL = pytest.mark.skipif(
    not bf16.rounds_in_kernel(), reason="oneDNN ignores fp32_precision='bf16' on this CPU (no rounding)"
)


@pytest.mark.parametrize(
    ("kind", "rounding"),
    [
        ("written-out", "probed"),
        ("written-out", "cast"),
        pytest.param("written-out", "in-kernel", marks=IN_KERNEL),
        ("autograd", "probed"),
    ],
)
def test_bf16_products_stay_within_bfloat16_rounding(
    kind: str, rounding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With bfloat16 products (`--precision bf16`) the terms are within 1% of float32's and every
    gradient within 5% (1-3% seen: bfloat16 keeps 8 bits, and the untrained network's gradients
    cancel), the gradients stay float32 for Adam, and they differ from float32's by far more than
    float32 rounding (1e-7), so the products did run in bfloat16, on Intel (AMX) and AMD CPUs alike."""
    if ROUNDING[rounding] is not None:
        monkeypatch.setattr(bf16, "rounds_in_kernel", lambda: ROUNDING[rounding])
    torch.manual_seed(0)
    model = VAE(MLPS[0])
    x = torch.rand(128, 1, 28, 28).bernoulli()
    torch.manual_seed(1)
    recon, _, reference = autograd_step(model, x, 1.0)
    torch.manual_seed(1)
    got_recon, got = bf16_step(kind, model, x)
    assert got_recon.dtype == torch.float32
    torch.testing.assert_close(got_recon, recon, rtol=1e-2, atol=0.0)
    for (name, _), g, ref in zip(model.named_parameters(), got, reference, strict=True):
        assert g.dtype == torch.float32, name
        error = ((g - ref).norm() / ref.norm()).item()
        assert 1e-4 < error < 5e-2, (name, error)


def test_the_probe_tells_whether_a_layer_sized_product_is_rounded() -> None:
    """Under `bfloat16_products`, a product of the 784-400 layer's size equals the product of the
    bfloat16-rounded operands where the probe says the kernels round, and the float32 product
    (to float32 rounding) where it says they do not."""
    torch.manual_seed(0)
    h, w = torch.randn(128, 784), torch.randn(400, 784)
    with bf16.bfloat16_products():
        got = h @ w.t()
    exact, rounded = h @ w.t(), h.bfloat16().float() @ w.bfloat16().float().t()
    gap = (exact - rounded).abs().max().item()  # what rounding the operands changes: about 1e-1
    expected = rounded if bf16.rounds_in_kernel() else exact
    assert (got - expected).abs().max().item() < gap / 100


def test_bf16_in_the_kernels_casts_nothing_and_restores_the_matmul_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernels round, the written-out bf16 step multiplies the float32 weights themselves,
    and the process-wide matmul precision is as it was after the step, even one that fails."""
    monkeypatch.setattr(bf16, "rounds_in_kernel", lambda: True)
    torch.manual_seed(0)
    model = VAE(MLPS[0])
    backprop = MLPBackprop(model, torch.bfloat16)
    before = torch.backends.mkldnn.matmul.fp32_precision
    backprop(torch.rand(8, 1, 28, 28).bernoulli(), 1.0)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    assert backprop.in_kernel and backprop.operands == torch.float32
    with pytest.raises(RuntimeError):
        backprop(torch.rand(8, 1, 14, 14), 1.0)  # wrong image size: the first product fails
    assert torch.backends.mkldnn.matmul.fp32_precision == before


def test_bf16_where_the_kernels_do_not_round_casts_the_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernels ignore the request (AMD EPYC), the written-out bf16 step casts its operands
    to bfloat16, as on a GPU, and never touches the process-wide matmul precision."""
    monkeypatch.setattr(bf16, "rounds_in_kernel", lambda: False)
    precisions = []
    monkeypatch.setattr(bf16, "bfloat16_products", _recording(bf16.bfloat16_products, precisions))
    backprop = MLPBackprop(VAE(MLPS[0]), torch.bfloat16)
    backprop(torch.rand(8, 1, 28, 28).bernoulli(), 1.0)
    assert not backprop.in_kernel and backprop.operands == torch.bfloat16
    assert precisions == [False]


def _recording(block, calls: list):
    """`block`, recording the `enabled` of every call."""

    def record(*, enabled: bool = True):
        calls.append(enabled)
        return block(enabled=enabled)

    return record
