#!/usr/bin/env bash
# The exact commands that produced the shipped checkpoints (see checkpoints/README.md), in order.
# MNIST from a folder of IDX files; Fashion-MNIST from Debian's dataset-fashion-mnist package.
set -euo pipefail
MNIST=${MNIST:-../shared/mnist}
PY=${PY:-python}
train() { $PY -m vae_core train --threads 1 "$@"; }
evaluate() { $PY -m vae_core evaluate "$@" --write; }
stop_after() {  # train in the background; once epoch $1 is logged, SIGINT it (it saves and exits 0)
  local epoch=$1 out=$2; shift 2
  $PY -m vae_core train --threads 1 "$@" --out "$out" & local pid=$!
  until grep -q "\"epoch\": $epoch.0," "$out/metrics.jsonl" 2>/dev/null; do sleep 1; done
  kill -INT "$pid"; wait "$pid"
}

train --dataset mnist --data-dir "$MNIST" --arch mlp --hidden 512 256 --latent-dim 2 \
  --epochs 40 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --out checkpoints/mnist-2d
train --dataset fashion-mnist --arch mlp --hidden 512 256 --latent-dim 2 \
  --epochs 40 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --out checkpoints/fashion-2d

# mnist-best was started for 300 epochs, stopped by hand with SIGINT at step 27033 (epoch 57.6) and
# resumed with a 140-epoch total, which shortens its cosine schedule from there on. stop_after
# stops at the end of epoch 57 instead, so a rerun lands close to, not exactly on, the shipped one.
stop_after 57 checkpoints/mnist-best --dataset mnist --data-dir "$MNIST" --arch mlp --hidden 512 512 \
  --latent-dim 32 --epochs 300 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 10
train --out checkpoints/mnist-best --data-dir "$MNIST" --resume --epochs 140

# fashion-best likewise: started for 60 epochs, stopped by hand at step 6937 (epoch 14.8), resumed
# with a 40-epoch total.
stop_after 14 checkpoints/fashion-best --dataset fashion-mnist --arch mlp --hidden 512 512 \
  --latent-dim 32 --epochs 60 --lr 1e-3 --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 5
train --out checkpoints/fashion-best --resume --epochs 40

# mnist-conv: the residual conv, 70 epochs in one sitting (bf16 autocast where the CPU multiplies bf16).
train --dataset mnist --data-dir "$MNIST" --arch conv --hidden 32 64 --latent-dim 32 --epochs 70 \
  --lr 2e-3 --lr-warmup-epochs 1 --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 5 --precision bf16 \
  --out checkpoints/mnist-conv

# emoji-conv: Google's Noto emoji (checkpoints/build_emoji_folder.py), 32 px colour, the 8-bit logistic;
# the spec then names the folder relative to the project, so the shipped model finds it anywhere.
[ -d data/emoji ] || $PY checkpoints/build_emoji_folder.py data/emoji
train --dataset folder --data-dir data/emoji --image-size 32 --channels 3 --likelihood logistic \
  --arch conv --hidden 32 64 128 --latent-dim 32 --epochs 120 --lr 2e-3 --lr-warmup-epochs 2 \
  --lr-schedule cosine --min-lr 1e-5 --warmup-epochs 5 --precision bf16 --out checkpoints/emoji-conv
$PY checkpoints/relocate_folder.py checkpoints/emoji-conv data/emoji

evaluate checkpoints/mnist-2d --k 1000
evaluate checkpoints/fashion-2d --k 1000
evaluate checkpoints/mnist-best --k 5000
evaluate checkpoints/fashion-best --k 1000
evaluate checkpoints/emoji-conv --k 1000
# a conv decodes ~20x slower than the MLP: 1 h 50 min on 2 cores (seconds on a GPU)
evaluate checkpoints/mnist-conv --k 5000
