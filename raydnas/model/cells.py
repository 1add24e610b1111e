"""Cells that no search found: random cells of a space (the random baseline of a study) and the
reference cells that calibrate an evaluation protocol; and which cells are parameter-free.

* :func:`random_cell`: a cell drawn uniformly from the cells the space's discretization rule can
  produce. It is :func:`raydnas.model.genotype.derive` applied to i.i.d. uniform op weights, so the
  rule's constraints hold by construction: ``argmax_per_edge`` gives every edge an op uniform
  over all ops (``none`` included: NAS-Bench-201's 5^6 cells, each equally likely);
  ``top_k_edges`` gives every node k distinct inputs uniform over the k-subsets and each kept
  edge an op uniform over the ops outside ``exclude`` (DARTS: 2 inputs, no ``none``).
* :func:`reference_cells`: per space, the cells a protocol must tell apart: ``all_skip`` (every
  edge ``skip_connect``), ``all_pool`` (every edge the space's first pooling op), ``one_path``
  (``none`` everywhere but one conv edge from the last input into the first output node),
  ``skip_path`` (the same with ``skip_connect``: the identity cell, so the network is its stem,
  reductions and head alone), and the
  best known conv cell: NAS-Bench-201's best CIFAR-10 cell for NB201-style spaces
  (``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``),
  DARTS_V2 (quark0/darts ``genotypes.py``) for the DARTS space, and for any other space every
  edge its conv op with the most weights (``all_conv``).
* :func:`param_free_cell`: an op is parameter-free when it is in ``raydnas.model.ops.PARAM_FREE``
  (``none``, ``skip_connect``, pools; the set ``param_free_ops`` counts); a cell is
  parameter-free when it is live but no path from an input to the output passes an op with
  weights.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .genotype import Genotype, derive, parse_genotype
from .ops import OPS, PARAM_FREE
from .spaces import SearchSpace

#: NAS-Bench-201's best CIFAR-10 cell (94.37 % test, Dong & Yang 2020)
NB201_BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
              "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
#: DARTS_V2 (quark0/darts cnn/genotypes.py)
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
            "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
            "reduce_concat=[2, 3, 4, 5])")
#: the reference cells' names, in the order the calibration table lists them
REFERENCE_NAMES = ("conv", "one_path", "skip_path", "all_pool", "all_skip")
#: the parameter-free reference cells the conv cell must beat for a protocol to discriminate
PARAM_FREE_REFERENCES = ("skip_path", "all_pool", "all_skip")


def op_has_weights(name: str) -> bool:
    """Whether op ``name`` has weights: every op outside :data:`raydnas.model.ops.PARAM_FREE`."""
    return name not in PARAM_FREE


def param_free_cell(g: Genotype, cell: str = "normal") -> bool:
    """True when the cell is live (some path of non-``none`` edges joins an input to the
    output) but no such path passes an op with weights: its output is a fixed, weight-free
    function of its input (e.g. NB201's all-pool cell). A dead cell is not counted here
    (``Genotype.dead_cells``)."""
    nodes = g.cells.get(cell)
    if not nodes:
        return False
    live = set(range(g.inputs))      # reached by some live path
    weighted: set[int] = set()       # reached by a live path through an op with weights
    for j, node in enumerate(nodes):
        me = g.inputs + j
        for op, i in node:
            if op == "none" or i not in live:
                continue
            live.add(me)
            if i in weighted or op_has_weights(op):
                weighted.add(me)
    outs = g._outputs(len(nodes))
    return bool(live.intersection(outs)) and not weighted.intersection(outs)


def live_param_free_share(g: Genotype, cell: str = "normal") -> float:
    """The share of the cell's live ops (``none`` is a missing edge, not an op) that have no
    weights (skip_connect, pools); NaN for a cell without live ops."""
    ops = [op for node in g.cells.get(cell, ()) for op, _ in node if op != "none"]
    if not ops:
        return float("nan")
    return sum(not op_has_weights(op) for op in ops) / len(ops)


def random_cell(space: SearchSpace, seed: int) -> Genotype:
    """Cell number ``seed`` of the space's random baseline (see the module docstring)."""
    gen = torch.Generator().manual_seed(int(seed) * 7_919 + 17)
    weights = {ct: torch.rand(space.num_edges, len(space.ops), generator=gen)
               for ct in space.cell_types}
    return derive(weights, space)[0]


def _uniform(space: SearchSpace, op: dict[str, str]) -> Genotype:
    """A cell of one op per cell type on the edges the space's rule keeps (top-k: each node's
    k most recent states)."""
    cells = {}
    for ct in space.cell_types:
        nodes = []
        for j in range(space.nodes):
            n_in = space.inputs + j
            srcs = range(n_in) if space.rule != "top_k_edges" else range(max(0, n_in - space.k),
                                                                          n_in)
            nodes.append(tuple((op[ct], i) for i in srcs))
        cells[ct] = tuple(nodes)
    return Genotype(cells, space.inputs, space.output, space.genotype_format)


def _one_edge(space: SearchSpace, op: str) -> Genotype:
    """``op`` on one edge from the last input into the first output node, ``none`` elsewhere."""
    cells = {}
    first_out = space.nodes - 1 if space.output == "last" else 0
    for ct in space.cell_types:
        nodes = []
        for j in range(space.nodes):
            n_in = space.inputs + j
            srcs = list(range(n_in)) if space.rule != "top_k_edges" else \
                list(range(n_in))[-space.k:]
            nodes.append(tuple((op if j == first_out and i == space.inputs - 1 else "none", i)
                               for i in srcs))
        cells[ct] = tuple(nodes)
    return Genotype(cells, space.inputs, space.output, space.genotype_format)


def _conv_reference(space: SearchSpace, convs: list[str]) -> tuple[str, Genotype]:
    """The space's best known conv cell and its name (module docstring)."""
    ops = set(space.ops)
    if space.macro == "nb201" and space.inputs == 1 and space.nodes == 3 \
            and {"nor_conv_3x3", "skip_connect"} <= ops:
        return "nb201_best", parse_genotype(NB201_BEST)
    if space.macro == "darts" and space.inputs == 2 and space.nodes == 4 \
            and space.rule == "top_k_edges" and space.k == 2 \
            and {"sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "skip_connect"} <= ops:
        return "darts_v2", parse_genotype(DARTS_V2)
    big = max(convs, key=lambda o: sum(p.numel() for p in OPS.create(o, 8, 8, 1, True)
                                       .parameters()))
    return f"all_{big}", _uniform(space, {ct: big for ct in space.cell_types})


def reference_cells(space: SearchSpace, where: str = "calibrate", key: str = "calibrate"
                    ) -> dict[str, tuple[str, Genotype]]:
    """The space's reference cells (module docstring): name -> (what it is, cell), in the
    order of :data:`REFERENCE_NAMES`.

    Raises:
        ConfigError: the space lacks ``skip_connect``, a pooling op or a conv op.
    """
    pools = [o for o in space.ops if "pool" in o and not op_has_weights(o)]
    convs = [o for o in space.ops if o != "none" and "conv" in o and op_has_weights(o)]
    if "skip_connect" not in space.ops or not pools or not convs:
        raise ConfigError(where, key, True,
                          f"a space with skip_connect, a pooling op and a conv op (space "
                          f"{space.name!r} has {', '.join(space.ops)}), or calibrate: false")
    path_op = next((o for o in ("nor_conv_3x3", "sep_conv_3x3") if o in convs), convs[0])
    return {
        "conv": _conv_reference(space, convs),
        "one_path": (f"one {path_op} edge, none elsewhere", _one_edge(space, path_op)),
        "skip_path": ("one skip_connect edge, none elsewhere (the identity cell)",
                      _one_edge(space, "skip_connect")),
        "all_pool": (f"every edge {pools[0]}",
                     _uniform(space, {ct: pools[0] for ct in space.cell_types})),
        "all_skip": ("every edge skip_connect",
                     _uniform(space, {ct: "skip_connect" for ct in space.cell_types})),
    }
