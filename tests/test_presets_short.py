"""Every preset survives the first thing a user tries: a short run. Each preset of configs/ on
each built-in space, for 1 and for 2 epochs (small sizes), either finishes with a genotype of
that space or is refused with one ConfigError line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raydnas.config.experiment import load_config
from raydnas.errors import ConfigError
from raydnas.model.genotype import parse_genotype
from raydnas.search.run import run_search

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")
                 if not p.stem.startswith("quickstart")
                 and p.stem not in ("field_study", "decisive_study",
                                    "unas_study"))  # its top level is unas.yaml
SPACES = ["tiny", "tiny201", "nb201", "darts"]


def _short(preset: str, space: str, epochs: int) -> dict:
    """Small sizes; on the 8-op DARTS space the two costliest extras are cut: the tuned
    measurement and DARTS-PT's tuning between decisions (none, not 5 epochs)."""
    over = {"space": space, "epochs": epochs, "data.batch_size": 256,
            "model.cells": 3 if space in ("tiny", "darts") else 1,  # darts macro: >= 3
            "measure.bn_images": 256, "log.tensorboard": False, "log.print_every": 0}
    over["model.channels"] = 8 if preset == "pc_darts" else 4  # PC-DARTS: C/K with K 4
    if space == "darts":
        over["measure.tune_epochs"] = 0
        if preset == "darts_pt":
            over["select.pt_tune_epochs"] = 0
    if preset == "random_ws":  # RSPS's selection: a few cells, not 100
        over.update({"select.samples": 6, "select.top": 2, "select.screen_batches": 2})
    return over


#: DARTS-PT on the 8-op DARTS space scores 8 ops x 14 edges x 2 cell types on the val split
#: (150-250 s here even untuned); its selection code is the same on the other three spaces
CASES = [(p, s) for p in PRESETS for s in SPACES if (p, s) != ("darts_pt", "darts")]


@pytest.mark.slow
@pytest.mark.parametrize("preset,space", CASES)
def test_preset_finishes_short_runs_or_is_refused_in_one_line(preset, space, tmp_path):
    torch.set_num_threads(1)
    for epochs in (1, 2):
        out = tmp_path / f"e{epochs}"
        try:
            cfg = load_config(ROOT / "configs" / f"{preset}.yaml", _short(preset, space, epochs))
            m = run_search(cfg, out, device="cpu", log=lambda s: None)
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).count(":") >= 2, str(e)
            assert not out.exists(), "a refused run left a directory behind"
            continue
        assert m["epoch"] == epochs or m.get("early_stop")
        final = json.loads((out / "final.json").read_text())
        assert final["complete"] and final["space"] == space
        g = parse_genotype(final["genotype"]["darts"])
        assert g.cells  # the genotype parses back; a missing edge is written as none
        ops = {op for nodes in final["genotype"]["cells"].values() for node in nodes
               for op, _ in node}
        assert ops <= set(final["ops"]) | {"none"}, ops


def test_threshold_selection_drops_edges_on_a_space_without_none(tmp_path):
    """FairDARTS's threshold selection on the tiny space (no none op) after one epoch: no
    sigmoid gate passes 0.85 yet, so every edge is dropped, as the code's parse leaves them out
    of the genotype; the derived network and its measurement still run."""
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs" / "fairdarts.yaml",
                      {"epochs": 1, "model.channels": 4, "log.tensorboard": False})
    m = run_search(cfg, tmp_path, device="cpu", log=lambda s: None)
    assert "none" not in json.loads((tmp_path / "final.json").read_text())["ops"]  # drop_none
    assert m["select_dropped_ops"] > 0
    assert "('none', " in m["genotype"]
    assert 0.0 <= m["discrete_val_acc"] <= 1.0


def test_too_few_cells_for_the_darts_macro_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"model.cells = 2: an integer >= 3 .*no normal cell"):
        load_config(ROOT / "configs" / "snas.yaml", {"model.cells": 2})
