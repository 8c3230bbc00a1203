"""The gradient of the training loss for ReLU MLP VAEs, written out layer by layer.

Autograd records every operation of a step and replays the record backwards. For an MLP VAE the
backward pass is textbook backpropagation, so `MLPBackprop` writes it out: the same forward pass,
the same ELBO terms (`ElboTerms.of`, as `elbo_terms` scores them), the same gradients (tested
against autograd in float64), without building the tape. A step of the 784-400-20 recipe takes
3.85-3.99 ms against autograd's 4.27-4.52 ms on this project's 2-core CPU, about 2.4 ms of it in
its matrix products (`bench/step_speed.py`).

With L = mean_n [recon_n + beta kl_n], a linear layer out = h @ W.T + b, g = dL/d(out):

    dL/dx_logits = (sigmoid(x_logits) - x) / N                  Bernoulli pixels, closed form
    dL/dW        = g.T @ h,   dL/db = g.sum(0)                  every linear layer
    dL/dh        = g @ W                                        its input, (N, in)
    dL/da        = dL/dh * (a > 0)                              below h = relu(a)
    dL/dmu       = dL/dz + beta mu / N                          z = mu + exp(logvar / 2) eps
    dL/dlogvar   = dL/dz eps exp(logvar / 2) / 2 + beta (exp(logvar) - 1) / (2 N)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae_core.model import VAE
from vae_core.objective import ElboTerms

_relu_backward = torch.ops.aten.threshold_backward  # grad * (h > 0): autograd's own ReLU backward


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


class MLPBackprop:
    """Computes a batch's ELBO terms and fills every parameter's `.grad` with d(loss)/d(parameter).

    The loss is the training loss, mean over the batch of recon + beta * KL; the ELBO terms
    returned are per image (nats), for logging. One posterior sample per image, drawn with
    `torch.randn` exactly as `objective.reparameterize` draws it.
    """

    def __init__(self, model: VAE) -> None:
        if not self.supports(model):
            raise ValueError(f"MLPBackprop needs an mlp VAE with relu, got {model.config}")
        self.model = model
        self.encoder, self.decoder = _linears(model.encoder), _linears(model.decoder)

    @staticmethod
    def supports(model: VAE) -> bool:
        return model.config.arch == "mlp" and model.config.activation == "relu"

    def __call__(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) in [0, 1] -> recon, kl: each (N,); the gradients are in `.grad`."""
        with torch.no_grad():
            return self._step(x, beta)

    def _step(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        n = len(x)
        x_flat = x.reshape(n, -1)  # (N, P)

        # Forward, keeping the input of every linear layer for its weight gradient.
        enc_inputs = _layer_inputs(self.encoder, x_flat)
        mu, logvar = _affine(self.encoder[-1], enc_inputs[-1]).chunk(2, dim=1)  # (N, D) each
        eps = torch.randn_like(mu)
        std = logvar.mul(0.5).exp_()
        z = torch.addcmul(mu, std, eps)
        dec_inputs = _layer_inputs(self.decoder, z)
        x_logits = _affine(self.decoder[-1], dec_inputs[-1])  # (N, P)
        terms = ElboTerms.of(x_flat, mu, logvar, x_logits)

        # Backward, from dL/dx_logits down to the first layer.
        g_z = _backward(self.decoder, dec_inputs, torch.sigmoid(x_logits).sub_(x_flat).div_(n))
        c = beta / n
        g_mu = torch.add(g_z, mu, alpha=c)
        g_logvar = g_z.mul_(eps).mul_(std).add_(logvar.exp().sub_(1.0), alpha=c).mul_(0.5)
        _backward(self.encoder, enc_inputs, torch.cat([g_mu, g_logvar], dim=1), input_grad=False)
        return terms.recon, terms.kl


def _affine(layer: nn.Linear, h: Tensor) -> Tensor:
    """h @ W.T + b: (N, in) -> (N, out)."""
    return torch.addmm(layer.bias, h, layer.weight.t())


def _layer_inputs(layers: list[nn.Linear], h: Tensor) -> list[Tensor]:
    """The input of each layer of an MLP: h, then relu(h @ W.T + b) after every layer but the last."""
    inputs = [h]
    for layer in layers[:-1]:
        inputs.append(_affine(layer, inputs[-1]).relu_())
    return inputs


def _backward(
    layers: list[nn.Linear], inputs: list[Tensor], g: Tensor, *, input_grad: bool = True
) -> Tensor | None:
    """Given g = dL/d(output of the last layer), set every layer's gradients; returns dL/d(input)."""
    for i in reversed(range(len(layers))):
        layer, h = layers[i], inputs[i]
        torch.mm(g.t(), h, out=_grad(layer.weight))
        torch.sum(g, 0, out=_grad(layer.bias))
        if i == 0 and not input_grad:
            return None
        g = g @ layer.weight
        if i > 0:  # back through the ReLU that produced h
            g = _relu_backward(g, h, 0)
    return g


def _grad(p: nn.Parameter) -> Tensor:
    """The parameter's .grad, allocated on first use; its contents are overwritten, not accumulated."""
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad
