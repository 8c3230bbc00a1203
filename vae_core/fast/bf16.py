"""bfloat16 matrix products on a CPU, rounded inside oneDNN's kernels where the CPU does so.

`torch.backends.mkldnn.matmul.fp32_precision = "bf16"` allows oneDNN to round float32 operands to
bfloat16 inside its kernels and accumulate in float32, so a step need not cast its weights, inputs
and gradients. It allows; it does not oblige. On Intel CPUs with AMX the kernels round; on AMD EPYC
CPUs with AVX512-BF16 oneDNN keeps float32 although it reports bfloat16 support, and a run asked
for bf16 would silently be float32. `rounds_in_kernel` finds out once per process with one product
whose answer tells the two apart; where the kernels do not round, the written-out step casts its
operands to bfloat16 instead, as it does on a GPU.

The setting is process-wide, not per thread: while a `bfloat16_products` block runs, float32
products that other threads of the process run are rounded too. The trainer's steps are the only
matrix products of a training process (the app starts each run as a child process); a program
that trains in a thread beside other float32 work should train with fp32 products.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_PROBE_SIZE = 256  # rows, columns and inner size of the probe's product: a layer-sized product
_OFF_GRID = 1 + 2**-12  # not a bfloat16 number: bfloat16 keeps 8 significant bits and rounds it to 1


@contextmanager
def bfloat16_products(*, enabled: bool = True) -> Iterator[None]:
    """A block whose float32 matrix products on the CPU may take bfloat16 operands (see above)."""
    if not enabled:
        yield
        return
    matmul = torch.backends.mkldnn.matmul
    previous, matmul.fp32_precision = matmul.fp32_precision, "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


@functools.cache
def rounds_in_kernel() -> bool:
    """Whether this CPU's float32 products round their operands to bfloat16 in a `bfloat16_products`
    block: each entry of ones(n, n) * (1 + 2^-12) @ ones(n, n) is n with rounded operands, and
    n (1 + 2^-12) (exact in float32) without. Probed once per process."""
    if not torch.backends.mkldnn.is_available():
        return False
    a = torch.full((_PROBE_SIZE, _PROBE_SIZE), _OFF_GRID)
    b = torch.ones(_PROBE_SIZE, _PROBE_SIZE)
    with torch.no_grad(), bfloat16_products():
        product = a @ b
    return bool(torch.all(product == _PROBE_SIZE))
