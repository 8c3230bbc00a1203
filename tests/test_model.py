"""The model contract: shapes, config validation, and architecture details."""

from __future__ import annotations

import pytest
import torch

from vae_core import VAE, VAEConfig


def test_encode_decode_shapes(config: VAEConfig) -> None:
    """encode maps (N, 1, 28, 28) to two (N, latent_dim) tensors; decode maps back to logits."""
    model = VAE(config)
    x = torch.rand(7, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (7, config.latent_dim)
    assert model.decode(mu).shape == (7, 1, 28, 28)


def test_decoder_returns_unbounded_logits() -> None:
    """The decoder's last layer is linear, so logits are not squashed into [0, 1]."""
    model = VAE(VAEConfig(latent_dim=2, hidden=(16,)))
    logits = model.decode(10 * torch.randn(256, 2))
    assert logits.min() < 0 < 1 < logits.max()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "rnn"}, "arch"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden": ()}, "hidden"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    """A bad config names the offending field."""
    with pytest.raises(ValueError, match=message):
        VAEConfig(**kwargs)


def test_config_is_frozen_and_round_trips_through_a_dict() -> None:
    """Configs are immutable and rebuild exactly from `to_dict` (as stored in checkpoints)."""
    config = VAEConfig(arch="conv", latent_dim=4, hidden=[8, 16])
    with pytest.raises(AttributeError):
        config.latent_dim = 3  # type: ignore[misc]
    assert VAEConfig(**config.to_dict()) == config
    assert config.hidden == (8, 16)


def test_wrong_input_shapes_give_clear_errors() -> None:
    """encode and decode name the expected shape when given another."""
    model = VAE(VAEConfig(latent_dim=3, hidden=(8,)))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model.encode(torch.rand(2, 784))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model.decode(torch.rand(2, 2))


def test_conv_decoder_size_follows_the_config() -> None:
    """Conv sizes are derived from the config: three stride-2 layers go 28 -> 4 and back to 28."""
    model = VAE(VAEConfig(arch="conv", latent_dim=2, hidden=(4, 8, 16)))
    first = model.decoder[0]
    assert first.out_features == 16 * 4 * 4
    assert model.decode(torch.zeros(1, 2)).shape == (1, 1, 28, 28)


SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 16, 16), (1, 128, 128)]


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_every_architecture_takes_every_size_and_colour(shape: tuple, arch: str, likelihood: str) -> None:
    """Both architectures encode (N, C, S, S) images of any supported size, grey or colour, and decode
    the likelihood's param_channels(C) channels at the same size."""
    config = VAEConfig(arch=arch, latent_dim=3, hidden=(4, 8), likelihood=likelihood, image_shape=shape)
    model = VAE(config)
    mu, logvar = model.encode(torch.rand(2, *shape))
    assert mu.shape == logvar.shape == (2, 3)
    per_channel = 2 if likelihood == "logistic" else 1
    assert model.decode(mu).shape == (2, per_channel * shape[0], *shape[1:])
    assert model.likelihood.mean(model.decode(mu)).shape == (2, *shape)


def test_conv_has_residual_blocks_at_each_resolution() -> None:
    """The conv encoder and decoder each hold RES_BLOCKS residual blocks per stride-2 layer, and a
    block keeps its input's shape."""
    from vae_core.model import RES_BLOCKS, ResBlock

    model = VAE(VAEConfig(arch="conv", latent_dim=2, hidden=(4, 8, 16), image_shape=(3, 32, 32)))
    for part in (model.encoder, model.decoder):
        assert sum(isinstance(m, ResBlock) for m in part) == 3 * RES_BLOCKS
    block = ResBlock(5, torch.nn.ReLU)
    assert block(torch.rand(2, 5, 7, 7)).shape == (2, 5, 7, 7)


def test_conv_weights_are_channels_last_and_iwae_chunks_fit_the_decode_budget() -> None:
    """A conv VAE keeps its 4-D weights channels-last (oneDNN's fast layout); IWAE decodes a conv's
    samples in chunks whose widest activation fits DECODE_BYTES, an MLP's in MLP_ROWS."""
    from vae_core.evaluation import DECODE_BYTES, MLP_ROWS, decode_rows

    conv = VAE(VAEConfig(arch="conv", hidden=(32, 64), latent_dim=4))
    weights = [p for p in conv.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    rows = decode_rows(conv)
    assert rows * 32 * 28 * 28 * 4 <= DECODE_BYTES < (rows + 1) * 32 * 28 * 28 * 4
    assert decode_rows(VAE(VAEConfig(hidden=(16,), latent_dim=2))) == MLP_ROWS
