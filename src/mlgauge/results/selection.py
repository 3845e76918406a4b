"""Naming stored runs on the command line: run ids, ``last``, ``last~N``, and comma lists."""

from __future__ import annotations

import re

from mlgauge.errors import UsageError

_LAST = re.compile(r"last(?:~(\d+))?")
RUNS_HINT = "List the stored runs with 'mlgauge results --runs'"


def _nth_run(store, n: int, spec: str) -> str:
    # Inference runs, training sets, Tiny runs and profiles, newest first; each list may also hold
    # one group of records stored without a run id, which is skipped, and a run id found in two
    # tables counts once.
    every = [
        *store.runs(limit=n + 3), *store.training_sets(limit=n + 3), *store.tiny_sets(limit=n + 3),
        *store.profile_sets(limit=n + 3),
    ]  # fmt: skip
    every.sort(key=lambda r: r["created_at"] or "", reverse=True)
    runs = list(dict.fromkeys(r["run_id"] for r in every if r["run_id"]))
    if n >= len(runs):
        held = f"holds {len(runs)} run" + ("" if len(runs) == 1 else "s")
        wanted = "the newest run" if n == 0 else f"the run {n} before the newest"
        raise UsageError(f"'{spec}' asks for {wanted}, but the database {held}", hint=RUNS_HINT)
    return runs[n]


def resolve_runs(store, spec: str, side: str = "") -> list[str]:
    """Run ids named by ``spec``: ids, ``last`` (the newest) and ``last~N`` (N runs before
    it) joined by commas (repeats to pool), each checked to exist. ``side`` names the
    argument in messages ("A", "B", "--baseline")."""
    where = f" for {side}" if side else ""
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise UsageError(f"'{spec}'{where} holds an empty run id", hint="Join run ids with single commas: ID1,ID2")
    ids = []
    for part in parts:
        last = _LAST.fullmatch(part)
        if last:
            ids.append(_nth_run(store, int(last.group(1) or 0), part))
        elif not any(
            find(run_id=part, limit=1)
            for find in (store.query, store.query_training, store.query_tiny, store.query_profiles)
        ):
            raise UsageError(f"unknown run id '{part}'{where}", hint=RUNS_HINT)
        else:
            ids.append(part)
    return list(dict.fromkeys(ids))
