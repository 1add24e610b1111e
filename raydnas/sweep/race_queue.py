"""The searcher's side of a race (``sweep.race:``): which (method, seed) searches run next, fed
with the searches and evaluations that finish. The decisions are
:class:`raydnas.reduce.race.Race`'s; this class only turns trial results into its values.

A search seed's value is the race metric of its cell's evaluations, averaged over the
evaluation seeds that finished; a search that failed (or left no cell to evaluate), or whose
evaluations all failed, has no value. The state is plain data: the searcher saves it with its
own, so a driver killed mid-race resumes with the same eliminations.
"""

from __future__ import annotations

import math
from typing import Any

from ..reduce.race import Race, RaceRules


class RaceQueue:
    """A race over ``methods`` (names) with ``n_eval`` evaluation seeds per search seed."""

    def __init__(self, rules: RaceRules, methods: list[str], n_eval: int) -> None:
        self.race = Race(rules, list(methods))
        self.n_eval = n_eval
        self.evals: dict[tuple[str, int], dict[int, float | None]] = {}

    def start(self) -> list[tuple[str, int]]:
        """The first round's (method, seed) pairs."""
        return self.race.start()

    def search_done(self, method: str, seed: int, evaluated: bool) -> list[tuple[str, int]]:
        """A search finished; ``evaluated``: its cell's evaluations were queued (else the seed
        has no value). Returns the searches to start now."""
        if not evaluated:
            self.race.record(method, seed, None)
        return self._advance()

    def eval_done(self, method: str, seed: int, eval_seed: int,
                  result: dict[str, Any] | None) -> list[tuple[str, int]]:
        """An evaluation of ``(method, seed)``'s cell finished (``result`` None: it failed)."""
        v = (result or {}).get(self.race.rules.metric)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        got = self.evals.setdefault((method, seed), {})
        got[eval_seed] = float(v) if ok else None
        if len(got) >= self.n_eval:
            vals = [x for x in got.values() if x is not None]
            self.race.record(method, seed, sum(vals) / len(vals) if vals else None)
        return self._advance()

    def _advance(self) -> list[tuple[str, int]]:
        new: list[tuple[str, int]] = []
        while self.race.ready():
            new += self.race.step()
        return new

    @property
    def finished(self) -> bool:
        return self.race.finished
