"""The gradient of the training loss for ReLU MLP VAEs, written out layer by layer.

Autograd records every operation of a step and replays the record backwards. For an MLP VAE the
backward pass is textbook backpropagation, so `MLPBackprop` writes it out: the same forward pass,
the same ELBO terms (`ElboTerms.of`, as `elbo_terms` scores them), the same gradients (tested
against autograd in float64), without building the tape, which makes a step faster
(`bench/step_speed.py` measures by how much).

With `products=torch.bfloat16` (mixed precision, `--precision bf16`) the matrix products take
bfloat16 operands and accumulate in float32; the weights, their gradients (for Adam), the loss and
dL/dx_logits stay float32. On a CPU whose oneDNN kernels round float32 operands themselves
(`bf16.rounds_in_kernel`) every tensor stays float32 and nothing is cast; elsewhere (a GPU, or a
CPU whose kernels ignore the request) the operands are cast to bfloat16.

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

from vae_core.fast import bf16
from vae_core.fast.nll import bernoulli_nll
from vae_core.model import VAE
from vae_core.objective import ElboTerms, reparameterize

_relu_backward = torch.ops.aten.threshold_backward  # grad * (h > 0): autograd's own ReLU backward


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


class MLPBackprop:
    """Computes a batch's ELBO terms and fills every parameter's `.grad` with d(loss)/d(parameter).

    The loss is the training loss, mean over the batch of recon + beta * KL; the ELBO terms
    returned are per image (nats), for logging. One posterior sample per image, drawn by
    `objective.reparameterize` from the same noise as autograd's step. `products` is the dtype of
    the matrix products' operands: the parameters' own by default, or bfloat16 for mixed precision.
    `in_kernel` says whether bfloat16 operands are left to the CPU's kernels (nothing is cast).
    """

    def __init__(self, model: VAE, products: torch.dtype | None = None) -> None:
        if not self.supports(model):
            raise ValueError(f"MLPBackprop needs an mlp VAE with relu, got {model.config}")
        self.model = model
        weights = next(model.parameters()).dtype
        self.products = products or weights
        on_cpu_bf16 = model.device.type == "cpu" and self.products == torch.bfloat16
        self.in_kernel = on_cpu_bf16 and bf16.rounds_in_kernel()  # then nothing is cast
        self.operands = weights if self.in_kernel else self.products
        self.encoder, self.decoder = _linears(model.encoder), _linears(model.decoder)

    @staticmethod
    def supports(model: VAE) -> bool:
        return model.config.arch == "mlp" and model.config.activation == "relu"

    def __call__(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) in [0, 1] -> recon, kl: each (N,); the gradients are in `.grad`."""
        with torch.no_grad(), bf16.bfloat16_products(enabled=self.in_kernel):
            return self._step(x, beta)

    def _step(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        n = len(x)
        x_flat = x.reshape(n, -1)  # (N, P)
        encoder, decoder = _Layers(self.encoder, self.operands), _Layers(self.decoder, self.operands)

        # Forward, keeping the input of every linear layer for its weight gradient.
        enc_inputs = encoder.inputs(x_flat)
        mu, logvar = encoder.affine(-1, enc_inputs[-1]).to(x.dtype).chunk(2, dim=1)  # (N, D) each
        eps = torch.randn_like(mu)
        z = reparameterize(mu, logvar, eps)
        dec_inputs = decoder.inputs(z)
        x_logits = decoder.affine(-1, dec_inputs[-1]).to(x.dtype)  # (N, P)
        terms = ElboTerms.of(x_flat, mu, logvar, x_logits, nll=bernoulli_nll)

        # Backward, from dL/dx_logits down to the first layer.
        g_z = decoder.backward(dec_inputs, torch.sigmoid(x_logits).sub_(x_flat).div_(n)).to(x.dtype)
        c = beta / n
        g_mu = torch.add(g_z, mu, alpha=c)
        std = logvar.mul(0.5).exp_()
        g_logvar = g_z.mul_(eps).mul_(std).add_(logvar.exp().sub_(1.0), alpha=c).mul_(0.5)
        encoder.backward(enc_inputs, torch.cat([g_mu, g_logvar], dim=1), input_grad=False)
        return terms.recon, terms.kl


class _Layers:
    """An MLP's linear layers for one step, with their weights in the products' dtype (the weights
    themselves when it is theirs)."""

    def __init__(self, layers: list[nn.Linear], products: torch.dtype) -> None:
        self.layers, self.products = layers, products
        self.weights = [layer.weight.to(products) for layer in layers]
        self.biases = [layer.bias.to(products) for layer in layers]

    def affine(self, i: int, h: Tensor) -> Tensor:
        """h @ W.T + b for layer i, in the products' dtype: (N, in) -> (N, out)."""
        return torch.addmm(self.biases[i], h, self.weights[i].t())

    def inputs(self, h: Tensor) -> list[Tensor]:
        """The input of each layer: h, then relu(h @ W.T + b) after every layer but the last."""
        inputs = [h.to(self.products)]
        for i in range(len(self.layers) - 1):
            inputs.append(self.affine(i, inputs[-1]).relu_())
        return inputs

    def backward(self, inputs: list[Tensor], g: Tensor, *, input_grad: bool = True) -> Tensor | None:
        """Given g = dL/d(output of the last layer), set every layer's gradients; returns dL/d(input)."""
        for i in reversed(range(len(self.layers))):
            layer, h, g = self.layers[i], inputs[i], g.to(self.products)
            weight_grad = _grad(layer.weight)
            if weight_grad.dtype == self.products:
                torch.mm(g.t(), h, out=weight_grad)
            else:  # bfloat16 products, float32 gradients
                weight_grad.copy_(torch.mm(g.t(), h))
            torch.sum(g, 0, dtype=layer.bias.dtype, out=_grad(layer.bias))
            if i == 0 and not input_grad:
                return None
            g = g @ self.weights[i]
            if i > 0:  # back through the ReLU that produced h
                g = _relu_backward(g, h, 0)
        return g


def _grad(p: nn.Parameter) -> Tensor:
    """The parameter's .grad, allocated on first use; its contents are overwritten, not accumulated."""
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad
