"""Racing over seeds (``sweep.race:``): a study that spends its seeds on the methods still in
contention. The same :class:`Race` runs live in the sweep's searcher and is replayed by the
report on the study's recorded values (it is a deterministic function of them), and by
``benchmarks/race_replay.py`` on a fixed study's values in shuffled seed orders.

Rounds: every method starts with ``min_seeds`` search seeds (0, 1, ...; each search and its
evaluations). When every contender's seeds of the round have their value — the truth
``metric`` of the retrained cell (``eval_val_acc``, the protocol's validation part; never a
test accuracy), averaged over its evaluation seeds — :func:`raydnas.reduce.decide.eliminate`
takes out the methods that are significantly below ``top_k`` others (all pairs compared,
Bonferroni over the pairs), at the race's confidence spread over its rounds
(``alpha_spending``). The others get ``seeds_per_round`` more seeds, until at most ``top_k``
are left (decided) or they have ``max_seeds`` (undecided). A seed whose search or evaluation
failed counts as no value; a method with no value at all after a round is out as failed.

``futility: F`` (off by default) also stops a race that ``max_seeds`` cannot decide: after a
round that decides nothing, the seeds each that would tell the ``top_k``-th method from the
next at the round's level (:func:`raydnas.reduce.decide.seeds_to_tell`, Welch at 80 % power,
from the observed means and variances; a planning estimate, as CAISEr's sample-size rule) are
computed, and above F × ``max_seeds`` the race ends undecided, saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .decide import Round, eliminate, seeds_to_tell


@dataclass(frozen=True)
class RaceRules:
    """A validated ``sweep.race:`` block."""

    min_seeds: int = 3
    max_seeds: int = 10
    seeds_per_round: int = 1
    confidence: float = 0.95
    top_k: int = 1
    metric: str = "eval_val_acc"
    alpha_spending: str = "bonferroni"  # or "none"
    futility: float | None = None       # stop when the seeds needed exceed this × max_seeds

    @property
    def max_rounds(self) -> int:
        return 1 + math.ceil((self.max_seeds - self.min_seeds) / self.seeds_per_round)

    @property
    def alpha(self) -> float:
        """Each round's family-wise level: α spread over every round the race may have
        (``bonferroni``), or α itself (``none``)."""
        a = 1 - self.confidence
        return a / self.max_rounds if self.alpha_spending == "bonferroni" else a

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("min_seeds", "max_seeds", "seeds_per_round",
                                             "confidence", "top_k", "metric", "alpha_spending")}
        if self.futility is not None:  # absent when off: races recorded before it continue
            out["futility"] = self.futility
        return out


@dataclass
class Race:
    """The state of one race (plain data: the searcher pickles it with its own state).

    ``seed_order``: the search seeds in the order rounds take them (default 0, 1, 2, ...)."""

    rules: RaceRules
    methods: list[str]
    seed_order: list[int] | None = None
    contenders: list[str] = field(default_factory=list)
    target: int = 0                      # seeds each contender has been given
    values: dict[str, dict[int, float | None]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    out: dict[str, int] = field(default_factory=dict)  # method -> round it left

    def __post_init__(self) -> None:
        if self.seed_order is None:
            self.seed_order = list(range(self.rules.max_seeds))
        if not self.contenders and not self.rounds:
            self.contenders = list(self.methods)
            self.values = {m: {} for m in self.methods}

    def start(self) -> list[tuple[str, int]]:
        """The first round's (method, seed) pairs, seed-major."""
        return self._give(self.rules.min_seeds)

    def record(self, method: str, seed: int, value: float | None) -> None:
        """A seed's truth (None: its search or evaluation failed)."""
        if method in self.values:
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            self.values[method][seed] = float(value) if ok else None

    def ready(self) -> bool:
        """Whether every contender's seeds so far have a value (or failed)."""
        return not self.finished and all(
            s in self.values[m] for m in self.contenders for s in self.seed_order[:self.target])

    @property
    def finished(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].get("final", False)

    def step(self) -> list[tuple[str, int]]:
        """Decide the round that is :meth:`ready`: eliminate, then the next seeds to run
        (empty when the race is over)."""
        vals = {m: [v for s in self.seed_order[:self.target]
                    if (v := self.values[m].get(s)) is not None] for m in self.contenders}
        r = eliminate(vals, self.rules.alpha, self.rules.top_k, len(self.rounds) + 1)
        rec = r.to_dict()
        gone = set(r.eliminated) | set(r.failed)
        for m in gone:
            self.out[m] = r.number
        self.contenders = [m for m in self.contenders if m not in gone]
        done = len(self.contenders) <= self.rules.top_k or self.target >= self.rules.max_seeds
        if not done and not gone and self.rules.futility is not None:
            order = sorted((m for m in self.contenders if m in r.means), key=lambda m: -r.means[m])
            need = self.target + _more_seeds(self, order)
            if need > self.rules.futility * self.rules.max_seeds:  # NaN (no estimate): go on
                done = True
                rec["futile"] = need
        rec["final"] = done
        self.rounds.append(rec)
        return [] if done else self._give(min(self.rules.max_seeds,
                                              self.target + self.rules.seeds_per_round))

    def _give(self, target: int) -> list[tuple[str, int]]:
        new = [(m, s) for s in self.seed_order[self.target:target] for m in self.contenders]
        self.target = target
        return new

    # -- the outcome ------------------------------------------------------------------------
    def searches(self) -> int:
        """Search trials the race ran (every seed given to a method)."""
        return sum(len(v) for v in self.values.values())

    def decision(self) -> dict[str, Any]:
        """The outcome: ``decided``, ``best`` (the leader), the contenders, the searches it took
        against a fixed ``max_seeds`` study, and a sentence."""
        rules, n = self.rules, len(self.methods)
        fixed = n * rules.max_seeds
        last = self.rounds[-1] if self.rounds else {}
        means = last.get("means", {})
        live = [m for m in self.contenders if m in means]
        order = sorted(live, key=lambda m: -means[m])
        decided = bool(self.finished and len(self.contenders) <= rules.top_k and order)
        conf = f"{100 * rules.confidence:g} %"
        out = {"decided": decided, "best": order[0] if order else None, "contenders": order,
               "searches": self.searches(), "fixed_searches": fixed, "rounds": len(self.rounds),
               "confidence": rules.confidence}
        by_test = any(r["eliminated"] for r in self.rounds)
        failed = [m for m in self.methods if m in self.out and not any(
            m in r["eliminated"] for r in self.rounds)]
        if self.finished and not order:
            out["sentence"] = f"no method of {n} has a result: every seed failed."
        elif decided and not by_test:
            who = ", ".join(order)
            out["sentence"] = (f"{who} {'is' if len(order) == 1 else 'are'} the only method(s) "
                               f"with results ({', '.join(failed)} failed every seed); no "
                               f"comparison decided it, after {out['searches']} searches.")
        elif decided:
            who = order[0] if rules.top_k == 1 else ", ".join(order)
            what = "the best" if rules.top_k == 1 else f"the top {rules.top_k}"
            out["sentence"] = (f"{who} {'is' if rules.top_k == 1 else 'are'} {what} of {n} at "
                               f"{conf} by {rules.metric} after {out['searches']} searches; a "
                               f"fixed {rules.max_seeds}-seed study: {fixed}.")
        elif not self.finished:
            out["sentence"] = (f"race under way: {len(self.contenders)} of {n} methods in "
                               f"contention after {out['searches']} searches.")
        else:
            more = _more_seeds(self, order)
            out["more_seeds"] = more
            tail = f"; about {int(more)} more seeds each would decide" if more and \
                math.isfinite(more) else ""
            futile = last.get("futile")
            if futile is not None:
                out["sentence"] = (
                    f"undecided by {rules.metric} between {', '.join(order)}: stopped for "
                    f"futility after {out['searches']} searches ({self.target} seeds each), "
                    f"about {int(futile) if math.isfinite(futile) else 'infinitely many'} seeds "
                    f"each would decide, over {rules.futility:g} × max_seeds "
                    f"({rules.max_seeds}); a fixed {rules.max_seeds}-seed study: {fixed}.")
            else:
                out["sentence"] = (f"undecided by {rules.metric} between {', '.join(order)} "
                                   f"after {out['searches']} searches ({rules.max_seeds} seeds "
                                   f"each){tail}.")
        return out


def _more_seeds(race: Race, order: list[str]) -> float:
    """Seeds each beyond the current ones that would tell the ``top_k``-th method from the next
    (at the race's per-pair level: its round level over the pairs of the contenders)."""
    k = race.rules.top_k
    if len(order) <= k:
        return math.nan
    a, b = order[k - 1], order[k]  # the boundary of the top k, and the first below it
    vals = {m: [v for v in race.values[m].values() if v is not None] for m in (a, b)}
    pairs = len(order) * (len(order) - 1) / 2
    n = seeds_to_tell(vals[a], vals[b], confidence=1 - race.rules.alpha / pairs)
    return max(1.0, n - race.target) if math.isfinite(n) else n


def replay(rules: RaceRules, values: dict[str, dict[int, float | None]],
           seed_order: list[int] | None = None) -> Race:
    """The race these rules run on recorded ``values`` (method -> seed -> value or None), seeds
    taken in ``seed_order``; a seed without a record ends the replay where the live race
    would wait for it."""
    race = Race(rules, list(values), seed_order=seed_order)
    todo = race.start()
    while todo:
        for m, s in todo:
            if s in values[m]:
                race.record(m, s, values[m][s])
        if not race.ready():
            break
        todo = race.step()
    return race


def _why(method: str, test: dict[str, Any] | None) -> str:
    if not test:
        return method
    return (f"{method} (below {test['vs']}: t {test['t']:.2f}, p {test['p']:.2g}, "
            f"x pairs {test['p_adj']:.2g})")


def round_table(race: Race) -> list[dict[str, Any]]:
    """One row per round: seeds each, the boundary, who left and the statistic (the pair
    that put it out: t, p, and p times the pairs compared)."""
    rows = []
    for r in race.rounds:
        left = [_why(m, r["tests"].get(m)) for m in r["eliminated"]] \
            + [f"{m} (failed)" for m in r["failed"]]
        rows.append({"round": r["round"], "seeds": max(r["seeds"].values(), default=0),
                     "contenders": len(r["seeds"]) + len(r["failed"]),
                     "boundary": r["boundary"], "alpha": r["alpha"],
                     "eliminated": ", ".join(left) or "—"})
    return rows


__all__ = ["Race", "RaceRules", "Round", "replay", "round_table"]
