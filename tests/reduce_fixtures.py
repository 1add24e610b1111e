"""Write experiment directories in the layout Ray Tune 2.60 writes (see raydnas.results.load).

The trial results are synthetic (known genotypes, chosen accuracies) so the tests can compute
every reliability number by hand; the files are the ones Tune and ``run_search`` write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_OPS = ["none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"]
TINY_EDGES = [[0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]
NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
NB201_EDGES = [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]


def darts(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> str:
    return (f"Genotype(normal={normal!r}, normal_concat=range(2, 4), "
            f"reduce={reduce!r}, reduce_concat=range(2, 4))")


class ExperimentWriter:
    def __init__(self, root: Path, name: str = "exp") -> None:
        self.path = root / name
        self.path.mkdir(parents=True)
        self.state: list[list[str]] = []
        self.count = 0

    def trial(self, config: dict[str, Any], genotypes: list[str] | None, *, val_acc: float = 0.5,
              discrete_val_acc: float = 0.4, epochs_planned: int | None = None,
              status: str = "TERMINATED", error: str | None = None, write_dir: bool = True,
              complete: bool | None = None, truncated_line: bool = False, nb201: bool = False,
              epoch_seconds: float = 1.5, arch_params: int = 1000,
              extra: dict[str, Any] | None = None) -> str:
        """One trial; ``genotypes`` per epoch (None: no results at all)."""
        tid = f"abcde_{self.count:05d}"
        dirname = f"trainable_{tid}_{self.count}_seed={config.get('seed')}_2026-11-22_18-00-00"
        self.count += 1
        genotypes = genotypes or []
        planned = epochs_planned or len(genotypes)
        if write_dir:
            d = self.path / dirname
            d.mkdir()
            (d / "params.json").write_text(json.dumps(config, indent=2))
            (d / "config.yaml").write_text(f"space: {'nb201' if nb201 else 'tiny'}\n"
                                           f"epochs: {planned}\nseed: {config.get('seed')}\n")
            rows = []
            for e, g in enumerate(genotypes, start=1):
                rows.append({"epoch": e, "train_loss": 1.0, "train_acc": 0.5,
                             "val_loss": 1.0, "val_acc": val_acc,
                             "discrete_val_acc": discrete_val_acc,
                             "discretization_gap": val_acc - discrete_val_acc,
                             "distance_to_discrete": 0.5, "alpha_entropy": 1.0, "genotype": g,
                             "genotype_changed": e > 1 and g != genotypes[e - 2],
                             "arch_params": arch_params, "param_free_ops": 2,
                             "alpha_steps": 10 * e, "alpha_steps_epoch": 10, "lr": 0.01,
                             "epoch_seconds": epoch_seconds, "done": False,
                             "training_iteration": e, "trial_id": tid, "config": config,
                             **(extra or {})})
            if rows:
                (d / "result.json").write_text(
                    "".join(json.dumps(r) + "\n" for r in rows)
                    + ('{"epoch": 9, "val_acc": 0.' if truncated_line else ""))
                (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                ops, edges = (NB201_OPS, NB201_EDGES) if nb201 else (TINY_OPS, TINY_EDGES)
                cells = ["normal"] if nb201 else ["normal", "reduce"]
                final = {"metrics": rows[-1], "method": {}, "seed": config.get("seed"),
                         "ops": ops, "edges": edges,
                         "genotype": {"darts": genotypes[-1]},
                         "op_weights": {c: [[round(0.1 + 0.05 * ((i + j) % 4), 3)
                                             for j in range(len(ops))]
                                            for i in range(len(edges))] for c in cells},
                         "complete": len(genotypes) >= planned if complete is None else complete}
                (d / "final.json").write_text(json.dumps(final))
            if error:
                (d / "error.txt").write_text(f"Traceback (most recent call last):\n{error}\n")
        state = {"trial_id": tid, "status": status, "config": config,
                 "relative_logdir": dirname if write_dir else None}
        runtime = {"error_filename": "error.txt" if error else None, "last_result": {}}
        self.state.append([json.dumps(state), json.dumps(runtime)])
        return tid

    def finish(self) -> Path:
        (self.path / "experiment_state-2026-11-22_18-00-00.json").write_text(
            json.dumps({"trial_data": self.state, "runner_data": {}, "stats": {}}))
        return self.path


def flat(method: str, seed: int, point: int | None = None, **hps: Any) -> dict[str, Any]:
    a, g, s, r = method.split("/")
    cfg = {"activation": a, "gradient": g, "schedule": s, "regularizer": r, "method": method,
           "seed": seed}
    if point is not None:
        cfg["point"] = point
    cfg.update(hps)
    return cfg
