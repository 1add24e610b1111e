"""A finished (or running) trial's cell, read back from its records."""

from __future__ import annotations

from ..model.genotype import Genotype, parse_genotype
from .load import Trial


def trial_genotype(t: Trial) -> Genotype | None:
    """The trial's final genotype: the cells in ``final.json`` when they belong to the last
    epoch (exact node structure), else parsed from the last epoch's ``genotype`` string."""
    text = t.last.get("genotype")
    if not isinstance(text, str):
        if t.final and isinstance(t.final.get("genotype"), dict):
            text = t.final["genotype"].get("darts")
        if not isinstance(text, str):
            return None
    try:
        g = parse_genotype(text)
    except (ValueError, SyntaxError):
        return None
    fin = t.final or {}
    geno = fin.get("genotype")
    cells = geno.get("cells") if isinstance(geno, dict) else None
    same_epoch = fin.get("metrics", {}).get("epoch") == t.last.get("epoch")
    if cells and same_epoch and set(cells) == set(g.cells):
        g = Genotype({c: tuple(tuple((str(op), int(i)) for op, i in node) for node in nodes)
                      for c, nodes in cells.items()}, g.inputs, g.output, g.format)
    return g
