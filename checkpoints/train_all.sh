#!/usr/bin/env bash
# The exact commands that produced the shipped checkpoints (see checkpoints/README.md).
# MNIST from a folder of IDX files; Fashion-MNIST from Debian's dataset-fashion-mnist package.
set -euo pipefail
MNIST=${MNIST:-../shared/mnist}
PY=${PY:-python}
train() { $PY -m vae_core train --threads 1 "$@"; }

train --dataset mnist --data-dir "$MNIST" --arch mlp --hidden 512 256 --latent-dim 2 \
  --epochs 40 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --out checkpoints/mnist-2d
train --dataset fashion-mnist --arch mlp --hidden 512 256 --latent-dim 2 \
  --epochs 40 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --out checkpoints/fashion-2d
train --dataset mnist --data-dir "$MNIST" --arch mlp --hidden 512 512 --latent-dim 32 \
  --epochs 200 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 10 --out checkpoints/mnist-best
train --dataset fashion-mnist --arch mlp --hidden 512 512 --latent-dim 32 \
  --epochs 60 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 5 --out checkpoints/fashion-best
