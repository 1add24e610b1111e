"""How the search's final cell is selected from the supernet (``select:`` of an experiment).

A selection runs once, after the last epoch's training (or an early stop), on any method: a
study can cross ``argmax`` with ``pt`` by giving two methods the same axes and different
``set: {select.name: ...}``. The epoch's record then holds the selected ``genotype`` (what
evaluation trains and the report ranks), its ``discrete_val_acc``/``discrete_val_loss``, and the
space's argmax cell as ``genotype_argmax``.

* ``argmax`` (default): the space's discretization rule on a(α)
(:func:`raydnas.model.genotype.derive`).
* ``threshold``: FairDARTS (Chu et al., ECCV 2020; xiaomi-automl/FairDARTS at 270cfc94,
  ``fairdarts/utils.py`` ``parse``, ``--parse_method threshold_sparse --op_threshold 0.85``):
  the space's rule picks the edges and ops, then a chosen op whose weight is below the threshold
  is dropped (its edge becomes ``none``, which adds zeros). The code drops the edge from the
  genotype instead; the two differ only around a node left with no input: the code's network
  removes it from the concatenation and skips the edges leaving it, while here it stays, as
  zeros, and its outgoing ops run on zeros (a conv's BatchNorm may then add a constant).
* ``pt``: DARTS-PT's perturbation-based selection (Wang et al., ICLR 2021; ruocwang/darts-pt at
  4ec3149d, ``sota/cnn/projection.py`` ``project_op``/``project_edge``,
  ``nasbench201/projection.py``; ``--edge_decision random --proj_crit acc --proj_intv 5``).
  Edges are decided in a random order (seeded by the search's seed), one edge of every cell type
  per decision: each candidate op is scored by the supernet's validation accuracy with that op's
  weight on the edge set to 0 (no renormalization), and the op whose removal leaves the lowest
  accuracy is fixed (ties: the first op), its row becoming one-hot. The candidates are the ops
  outside the space's ``exclude``: every op on NAS-Bench-201-style spaces (as the code's NB201
  run), all but ``none`` on DARTS-style ones (the code's DARTS space has no ``none``; here
  derivation never picks it there either). With ``top_k_edges`` spaces the nodes with more than
  k inputs are then decided in a random order: each incoming edge is scored by the accuracy with
  its row set to 0, and the k whose removal leaves the lowest accuracy are kept. Between
  decisions the supernet trains ``pt_tune_epochs`` epochs with the method's own steps (weights
  and α; a decided row no longer depends on α) under a fresh SGD at ``pt_lr`` (the code: lr/10 =
  0.0025, constant, after a 50-epoch search; its α steps are first order DARTS). The code also
  trains one epoch after the last decision, which cannot change the cell (skipped here), and its
  NB201 run's last interval is 4 epochs, not 5. Scores use the derivation's weights (with PC-
  DARTS's edge normalization, a(α) times the edge weights) and this project's measurement
  protocol (BatchNorm statistics re-estimated, eval mode, every validation image; the code
  scores in train mode on augmented data).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from ..model.genotype import Genotype, derive
from ..registry import Registry
from .measure import copy_model
from .state import _to, train_step

SELECTIONS: Registry["Selection"] = Registry("select", default="argmax")


class Selection:
    """Base class: :meth:`select` returns the final cell and its binary masks."""

    def __init__(self, cfg: Any) -> None:
        """``cfg``: the experiment's ``select`` section
        (:class:`~raydnas.config.experiment.SelectConfig`)."""
        self.cfg = cfg

    def select(self, st: Any, loop: Any, probs: dict[str, torch.Tensor]
               ) -> tuple[Genotype, dict[str, torch.Tensor], dict[str, Any]]:
        """(genotype, masks, extra metrics) of the search state ``st`` (after its last epoch;
        ``loop``: its batches and measurer; ``probs``: the detached weights it derives from)."""
        raise NotImplementedError


@SELECTIONS.register("argmax")
class Argmax(Selection):
    """The space's discretization rule (DARTS top-k edges, NB201 argmax per edge, ...)."""

    def select(self, st, loop, probs):
        g, masks = derive(probs, st.space)
        return g, masks, {}


@SELECTIONS.register("threshold")
class Threshold(Selection):
    """FairDARTS's ``threshold_sparse``: the space's rule, then ops below ``threshold`` off."""

    def select(self, st, loop, probs):
        g, masks = derive(probs, st.space)
        t = self.cfg.threshold
        cells, out_masks, dropped = {}, {}, 0
        for ct, nodes in g.cells.items():
            mask = masks[ct].clone()
            w = probs[ct].detach().float().cpu()
            new_nodes, e0 = [], 0
            for j, node in enumerate(nodes):
                n_in = st.space.inputs + j
                new = []
                for op, i in node:
                    if op != "none" and float(w[e0 + i, st.space.ops.index(op)]) < t:
                        mask[e0 + i] = 0.0
                        new.append(("none", i))
                        dropped += 1
                    else:
                        new.append((op, i))
                new_nodes.append(tuple(new))
                e0 += n_in
            cells[ct], out_masks[ct] = tuple(new_nodes), mask
        return (Genotype(cells, g.inputs, g.output, g.format), out_masks,
                {"select_dropped_ops": dropped})


@SELECTIONS.register("pt")
class Perturbation(Selection):
    """DARTS-PT (module docstring)."""

    def select(self, st, loop, probs):
        model, space, cfg = st.model, st.space, self.cfg
        rng = random.Random(st.cfg.seed)
        allowed = [k for k, o in enumerate(space.ops) if o not in space.exclude]
        cts = list(model.alphas)
        E = space.num_edges
        decided = {ct: torch.zeros(E, dtype=torch.bool) for ct in cts}
        onehot = {ct: torch.zeros(E, len(space.ops)) for ct in cts}
        removed = {ct: torch.zeros(E, dtype=torch.bool) for ct in cts}
        order = {ct: rng.sample(range(E), E) for ct in cts}
        nodes = [j for j in range(space.nodes)
                 if space.rule == "top_k_edges" and space.inputs + j > space.k]
        node_order = {ct: rng.sample(nodes, len(nodes)) for ct in cts}
        steps = E + len(nodes)
        tune_lr = cfg.pt_lr or st.cfg.optim.w_lr / 10
        saved_opt = st.w_optimizer
        o = st.cfg.optim
        st.w_optimizer = torch.optim.SGD(st.weights, lr=tune_lr, momentum=o.w_momentum,
                                         nesterov=o.w_nesterov, weight_decay=o.w_weight_decay)
        scores = 0
        try:
            for d in range(steps):
                for ct in cts:
                    if d < E:
                        scores += self._decide_op(st, loop, ct, order[ct][d], allowed, decided,
                                                  onehot, removed)
                    else:
                        scores += self._decide_node(st, loop, ct, node_order[ct][d - E], decided,
                                                    onehot, removed)
                model.projection = self._projection(decided, onehot, removed)
                if d < steps - 1:
                    for e in range(cfg.pt_tune_epochs):
                        model.train()
                        for batch in loop.train.iterate(10_000 + d * 100 + e):
                            train_step(st, _to(batch, st.device), loop.val)
        finally:
            st.w_optimizer = saved_opt
            model.projection = None
        final = self._weights(st, decided, onehot, removed)
        g, masks = derive(final, space)
        return g, masks, {"select_scores": scores,
                          "select_tune_epochs": cfg.pt_tune_epochs * (steps - 1)}

    @staticmethod
    def _projection(decided, onehot, removed):
        """Per cell type (rows to fix, their values): decided edges one-hot, removed ones 0."""
        return {ct: (decided[ct] | removed[ct], torch.where(removed[ct].unsqueeze(1),
                                                            torch.zeros_like(onehot[ct]),
                                                            onehot[ct]))
                for ct in decided}

    @staticmethod
    def _weights(st, decided, onehot, removed) -> dict[str, torch.Tensor]:
        """The weights the cell is derived from (a(α), times the edge weights with PC-DARTS's
        edge normalization) with the decided rows one-hot and the removed edges' rows 0
        (detached, CPU)."""
        out = {}
        for ct, p in st.model.derive_weights().items():
            w = p.detach().float().cpu().clone()
            w[decided[ct]] = onehot[ct][decided[ct]]
            w[removed[ct]] = 0.0
            out[ct] = w
        return out

    def _acc(self, net, loop, weights) -> float:
        return loop.measurer.measure(net, weights)[1]

    def _decide_op(self, st, loop, ct, e, allowed, decided, onehot, removed) -> int:
        base = self._weights(st, decided, onehot, removed)
        net = copy_model(st.model)
        best, best_acc = allowed[0], None
        for k in allowed:
            w = {c: v.clone() for c, v in base.items()}
            w[ct][e, k] = 0.0
            acc = self._acc(net, loop, w)
            if best_acc is None or acc < best_acc:  # the largest drop; ties: the first op
                best, best_acc = k, acc
        onehot[ct][e] = 0.0
        onehot[ct][e, best] = 1.0
        decided[ct][e] = True
        return len(allowed)

    def _decide_node(self, st, loop, ct, j, decided, onehot, removed) -> int:
        space = st.space
        e0 = sum(space.inputs + i for i in range(j))
        edges = list(range(e0, e0 + space.inputs + j))
        base = self._weights(st, decided, onehot, removed)
        net = copy_model(st.model)
        accs = []
        for e in edges:
            w = {c: v.clone() for c, v in base.items()}
            w[ct][e] = 0.0
            accs.append((self._acc(net, loop, w), e))
        keep = {e for _, e in sorted(accs)[: space.k]}  # the k largest drops
        for e in edges:
            if e not in keep:
                removed[ct][e] = True
        return len(edges)
