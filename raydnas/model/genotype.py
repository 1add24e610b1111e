"""Discretization: from op weights to a discrete cell, and the genotype formats people paste.

* DARTS: ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...],
  reduce_concat=range(2, 6))`` (quark0/darts cnn/genotypes.py).
* NAS-Bench-201: ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``.

Rules (``discretize.rule`` of a space):

* ``top_k_edges``: per node keep the k incoming edges whose best op outside ``exclude`` is
  strongest, with that op (DARTS).
* ``argmax_per_edge``: every edge keeps its argmax op, ``none`` included (NAS-Bench-201).
* ``all_edges``: like ``argmax_per_edge``, then edges whose op is ``none`` are dropped (SNAS).
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass

import torch

from .spaces import SearchSpace

Node = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: per cell type, per intermediate node, its (op, input) pairs."""

    cells: dict[str, tuple[Node, ...]]
    inputs: int
    output: str
    format: str

    @property
    def concat(self) -> list[int]:
        n = len(next(iter(self.cells.values())))
        first = self.inputs
        return list(range(first, first + n)) if self.output == "concat" else [first + n - 1]

    def edges(self) -> set[tuple[str, int, int, str]]:
        """The chosen (cell type, node, input, op) tuples; ``none`` entries are left out."""
        out = set()
        for ct, nodes in self.cells.items():
            for j, node in enumerate(nodes):
                for op, i in node:
                    if op != "none":
                        out.add((ct, self.inputs + j, i, op))
        return out

    def ops(self) -> list[str]:
        return [op for nodes in self.cells.values() for node in nodes for op, _ in node]

    def _outputs(self, n_nodes: int) -> list[int]:
        first = self.inputs
        return (list(range(first, first + n_nodes)) if self.output == "concat"
                else [first + n_nodes - 1])

    def live_edges(self, ct: str) -> set[tuple[int, int]]:
        """(node, input) of cell type ``ct``'s non-``none`` edges that lie on a path from an
        input node to the output; the others compute something nothing uses (their input is
        cut off from the inputs, or their node from the output)."""
        nodes = self.cells[ct]
        fed = set(range(self.inputs))  # reached from an input node
        for j, node in enumerate(nodes):
            if any(op != "none" and i in fed for op, i in node):
                fed.add(self.inputs + j)
        used = set(self._outputs(len(nodes)))  # reaches the output
        for j in reversed(range(len(nodes))):
            if self.inputs + j in used:
                used.update(i for op, i in nodes[j] if op != "none")
        return {(self.inputs + j, i) for j, node in enumerate(nodes) for op, i in node
                if op != "none" and i in fed and self.inputs + j in used}

    def dead_cells(self) -> list[str]:
        """The cell types whose output is cut off from their inputs: no path of non-``none``
        edges from an input node reaches the output (e.g. NB201's
        ``|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|``). A network of
        such a cell outputs a constant and cannot learn."""
        dead = []
        for ct, nodes in self.cells.items():
            live = set(range(self.inputs))
            for j, node in enumerate(nodes):
                if any(op != "none" and i in live for op, i in node):
                    live.add(self.inputs + j)
            if not live.intersection(self._outputs(len(nodes))):
                dead.append(ct)
        return dead

    def canonical(self) -> frozenset[tuple[str, int, int, str]]:
        """:meth:`edges` up to relabelling the intermediate nodes: two cells that differ only
        by the numbering of their intermediate nodes (the same graph) give the same set.

        Every numbering of the intermediate nodes that keeps edges pointing forward (inputs
        and, for ``output: last``, the output node stay fixed) is tried; the smallest edge list
        is the canonical form."""
        out: set[tuple[str, int, int, str]] = set()
        for ct, nodes in self.cells.items():
            n = len(nodes)
            first = self.inputs
            movable = list(range(first, first + n - (self.output != "concat")))
            edges = [(first + j, i, op) for j, node in enumerate(nodes) for op, i in node
                     if op != "none"]
            best = None
            for perm in itertools.permutations(movable):
                relabel = dict(zip(movable, perm))
                mapped = [(relabel.get(j, j), relabel.get(i, i), op) for j, i, op in edges]
                if any(i >= j for j, i, _ in mapped):
                    continue
                key = tuple(sorted(mapped))
                if best is None or key < best:
                    best = key
            out.update((ct, j, i, op) for j, i, op in best or ())
        return frozenset(out)

    def to_darts(self) -> str:
        """DARTS's ``Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)``,
        complete even for spaces without reduction cells (``reduce=[]``), so that it pastes into
        quark0/darts's ``namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')``."""
        c = self.concat
        rng = f"range({c[0]}, {c[-1] + 1})"
        parts = []
        for ct in ("normal", "reduce", *(k for k in self.cells if k not in ("normal", "reduce"))):
            nodes = self.cells.get(ct, ())
            pairs = [pair for node in nodes for pair in node]
            parts.append(f"{ct}={pairs!r}, {ct}_concat={rng}")
        return f"Genotype({', '.join(parts)})"

    def to_nb201(self) -> str:
        if self.inputs != 1:
            raise ValueError("NAS-Bench-201 strings need cells with one input node")
        nodes = next(iter(self.cells.values()))
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in nodes)

    def __str__(self) -> str:
        return self.to_nb201() if self.format == "nb201" else self.to_darts()


def derive(weights: dict[str, torch.Tensor],
           space: SearchSpace) -> tuple[Genotype, dict[str, torch.Tensor]]:
    """Discretize op weights ``{cell type: [edges, ops]}``: the genotype and the binary mask Π."""
    cells, masks = {}, {}
    for ct, w in weights.items():
        w = w.detach().float().cpu()
        mask = torch.zeros_like(w)
        allowed = torch.tensor([o not in space.exclude for o in space.ops])
        nodes, e0 = [], 0
        for j in range(space.nodes):
            n_in = space.inputs + j
            rows = w[e0:e0 + n_in]
            if space.rule == "top_k_edges":
                masked = rows.masked_fill(~allowed, float("-inf"))
                best, op_idx = masked.max(dim=1)
                order = sorted(range(n_in), key=lambda i: (-best[i].item(), i))[: space.k]
                chosen = [(i, int(op_idx[i])) for i in sorted(order)]
            else:
                op_idx = rows.argmax(dim=1)
                chosen = [(i, int(op_idx[i])) for i in range(n_in)]
            node = []
            for i, k in chosen:
                mask[e0 + i, k] = 1.0
                name = space.ops[k]
                if space.rule == "all_edges" and name == "none":
                    continue
                node.append((name, i))
            nodes.append(tuple(node))
            e0 += n_in
        cells[ct] = tuple(nodes)
        masks[ct] = mask
    return Genotype(cells, space.inputs, space.output, space.genotype_format), masks


def masks_of(genotype: Genotype, space: SearchSpace) -> dict[str, torch.Tensor]:
    """The binary ``[edges, ops]`` masks Π of a genotype of ``space`` (the inverse of
    :func:`derive`'s genotype): 1 at each chosen (edge, op); an edge whose op is ``none`` and
    not one of the space's ops stays 0."""
    out = {}
    for ct, nodes in genotype.cells.items():
        mask = torch.zeros(space.num_edges, len(space.ops))
        e0 = 0
        for j, node in enumerate(nodes):
            for op, i in node:
                if op in space.ops:
                    mask[e0 + i, space.ops.index(op)] = 1.0
            e0 += space.inputs + j
        out[ct] = mask
    return out


_DARTS_RE = re.compile(r"(\w+)=(\[.*?\]),\s*\1_concat=(range\(\s*\d+\s*,\s*\d+\s*\)|\[[\d,\s]*\])")


def parse_genotype(text: str, nodes: int | None = None) -> Genotype:
    """Parse a DARTS ``Genotype(...)`` or a NAS-Bench-201 arch string.

    A DARTS string does not mark node boundaries. Pairs are grouped per node: ``inputs + j`` for
    node j when every edge is written (NB201-style cells; pass ``nodes``, since their concat range
    holds the output node alone), else ``len(pairs) // nodes``, where ``nodes`` defaults to the
    length of the concat range. An empty ``reduce=[]`` (a space without reduction cells) is
    skipped.
    """
    text = text.strip()
    if text.startswith("|"):
        cell = []
        for part in text.split("+"):
            items = [s for s in part.strip("|").split("|") if s]
            node = []
            for it in items:
                op, _, src = it.rpartition("~")
                node.append((op, int(src)))
            cell.append(tuple(node))
        return Genotype({"normal": tuple(cell)}, 1, "last", "nb201")
    if not text.startswith("Genotype("):
        raise ValueError(f"not a genotype string: {text[:60]!r}")
    cells, inputs, output = {}, 2, "concat"
    for m in _DARTS_RE.finditer(text):
        ct, pairs_s, concat_s = m.group(1), m.group(2), m.group(3)
        pairs = [tuple(p) for p in ast.literal_eval(pairs_s)]
        if not pairs and ct != "normal":  # reduce=[]: a space without reduction cells
            continue
        if concat_s.startswith("range"):
            a, b = (int(x) for x in re.findall(r"\d+", concat_s))
            concat = list(range(a, b))
        else:
            concat = list(ast.literal_eval(concat_s))
        n = nodes or len(concat)
        if len(concat) == 1 and n > 1:  # the last node is the output (NB201-style)
            output = "last"
            inputs = concat[0] - n + 1
        else:
            inputs = concat[0]
        if len(pairs) == n * inputs + n * (n - 1) // 2:  # every edge written (argmax per edge)
            sizes = [inputs + j for j in range(n)]
        else:
            sizes = [max(1, len(pairs) // n)] * n
        starts = [sum(sizes[:j]) for j in range(n)]
        cells[ct] = tuple(tuple(pairs[a:a + k]) for a, k in zip(starts, sizes))
    if not cells:
        raise ValueError(f"no cells found in {text[:60]!r}")
    return Genotype(cells, inputs, output, "darts")
