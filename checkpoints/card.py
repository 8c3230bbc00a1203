"""Print the model-card table of checkpoints/README.md from the checkpoints themselves.

python checkpoints/card.py
"""

from __future__ import annotations

import json
from pathlib import Path

from vae_core import list_checkpoints, load_checkpoint
from vae_core.evaluation import nll_subset

HERE = Path(__file__).resolve().parent


def row(path: Path) -> str:
    model = load_checkpoint(path)
    c, m, spec = model.config, model.meta.metrics, model.meta.spec
    nll = f"{m['nll']:.2f} (k={m['nll_k']}{nll_subset(m).removesuffix(' images')})" if "nll" in m else "–"
    bits = f"{m['bits_per_dim']:.3f}" if "bits_per_dim" in m else "–"
    shape = "×".join(map(str, c.image_shape))
    data = f"folder `{spec.data.folder}`" if spec.data.folder else model.meta.dataset
    hidden = "-".join(map(str, c.hidden))
    return (
        f"| `{path.name}` | {data} ({shape}, {m['n_images']} test) "
        f"| {c.arch} {hidden} {c.activation} | {c.latent_dim} "
        f"| {model.meta.epoch} | {m.get('device', '?')}, {m.get('wall_time', 0) / 60:.0f} min "
        f"| {m['elbo']:.2f} ({m['recon']:.2f} + {m['kl']:.2f}) | {nll} | {bits} "
        f"| {m['active_units']}/{c.latent_dim} "
        f"| {c.likelihood}, {spec.data.binarize}, β={spec.train.beta}, lr {spec.train.lr:g} "
        f"{spec.train.lr_schedule} |"
    )


def main() -> None:
    print(
        "| model | dataset | architecture | latent dim | epochs | device, wall time "
        "| test ELBO (recon + KL), nats | NLL, nats | bits/dim | active units "
        "| likelihood, binarisation, training |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in list_checkpoints(HERE):
        print(row(path))
    for path in list_checkpoints(HERE):
        kl = [round(v, 2) for v in load_checkpoint(path).meta.metrics["kl_per_dim"]]
        print(f"\n`{path.name}` KL per dimension (nats): {json.dumps(kl)}")


if __name__ == "__main__":
    main()
