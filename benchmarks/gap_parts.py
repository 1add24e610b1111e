"""What the discretization gap of finished searches is made of: stale BatchNorm statistics,
inherited weights, or α that never left uniform.

For each search run directory (``raydnas search ... --out DIR``) it loads the last checkpoint
and measures, on the search-val split:

* ``old_val`` / ``old_disc``: raydnas 0.1's protocol: eval mode with the supernet's own running
  statistics; the supernet under softmax(α)/a(α) (also for Gumbel activations), the derived cell
  under its binary op weights;
* ``val`` / ``disc``: the current protocol (raydnas.search.measure): BatchNorm re-estimated on fixed
  search-train images, sampled networks for Gumbel activations;
* ``tuned``: the derived network fine-tuned for ``measure.tune_epochs`` from inherited weights;
* ``dist``: distance_to_discrete at the end (0.894 is uniform α on tiny201's 5 ops).

Usage: ``python benchmarks/gap_parts.py runs/q runs/darts_v1 ...`` (one JSON line per run, then
a Markdown table).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from raydnas import checkpoint as ckpt
from raydnas.config.experiment import DEFAULT_BN_IMAGES, from_dict
from raydnas.data.datasets import Batches
from raydnas.model.genotype import derive
from raydnas.model.network import from_supernet
from raydnas.search.measure import Measurer, bn_indices, evaluate
from raydnas.search.run import SearchState


def parts(run: Path) -> dict:
    cfg = from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text()),
                    str(run / "config.yaml"))
    dev = torch.device("cpu")
    st = SearchState(cfg, dev)
    saved = ckpt.load(run / ckpt.CHECKPOINT_NAME, map_location=dev)
    st.load_state_dict(saved["state"])
    split = json.loads((run / "split.json").read_text())
    bs = cfg.data.batch_size
    val_idx = split["val"] or split["train"]
    val_b = Batches(st.dataset, val_idx, bs, cfg.seed + 1, True)
    model = st.model
    probs = {c: p.detach() for c, p in model.op_probs().items()}
    genotype, masks = derive(probs, st.space)
    # raydnas 0.1: eval mode, the search's running statistics
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        _, old_val = evaluate(lambda x: m(x, op_weights=probs), val_b.sequential(), dev)
        _, old_disc = evaluate(lambda x: m(x, op_weights=masks), val_b.sequential(), dev)
    n_bn = cfg.measure.bn_images or min(DEFAULT_BN_IMAGES, len(split["train"]))
    meas = Measurer(st.dataset, bn_indices(split["train"], n_bn, cfg.seed), val_b, bs, dev,
                    cfg.measure.samples, cfg.seed)
    now = meas.supernet(model, masks)
    tune_b = Batches(st.dataset, split["train"], bs, cfg.seed + 2, True)
    tuned = meas.tuned(from_supernet(model, genotype), tune_b, max(1, cfg.measure.tune_epochs),
                       cfg.measure.tune_lr or cfg.optim.w_lr, cfg.optim)
    last = st.history[-1] if st.history else {}
    return {"run": str(run), "method": "/".join(cfg.method().values()), "space": cfg.space,
            "epochs": st.epoch, "old_val": old_val, "old_disc": old_disc,
            "val": now["val_acc"], "disc": now["discrete_val_acc"],
            "tuned": tuned["discrete_val_acc_tuned"],
            "dist": last.get("distance_to_discrete"), "genotype": str(genotype)}


def main(argv: list[str]) -> None:
    rows = []
    for d in argv:
        r = parts(Path(d))
        rows.append(r)
        print(json.dumps(r), flush=True)
    print("\n| run | method | epochs | val_acc 0.1 → now | discrete_val_acc 0.1 → now | "
          "tuned | distance |")
    print("|---|---|---:|---|---|---:|---:|")
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['method']} | {r['epochs']} | "
              f"{r['old_val']:.3f} → {r['val']:.3f} | {r['old_disc']:.3f} → {r['disc']:.3f} | "
              f"{r['tuned']:.3f} | {r['dist']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
