"""`manifest.json` of a generate run: counts of this run's rows, and spend, requests and
tokens summed over every invocation of the run (a resumed run adds up), per role and per
distinct teacher without counting a shared teacher twice, with the list of invocations."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from distillery.generate.context import GenContext
from distillery.records import Record
from distillery.runstate import RunDir
from distillery.teacher.outcome import COUNTERS

STATS = COUNTERS
ROLES = ("instructions", "evolution", "responses", "tags", "user")


def _number(value: float, name: str) -> float | int:
    return round(value, 6) if name == "spent_usd" else int(value)


def _teachers(ctx: GenContext, run: RunDir) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per role (its own calls only) and per distinct teacher client (the sum of its roles)."""
    totals = run.totals(*(f"{role}.{s}" for role in ROLES for s in STATS))
    roles: dict[str, Any] = {}
    clients: dict[int, dict[str, Any]] = {}
    for role, teacher in ctx.teachers.items():
        stats = {s: _number(totals[f"{role}.{s}"], s) for s in STATS}
        shared = [r for r, t in ctx.teachers.items() if t is teacher and r != role]
        roles[role] = {"spec": teacher.spec, "shares_teacher_with": shared, **stats}
        client = clients.setdefault(
            id(teacher), {"spec": teacher.spec, "roles": [], **dict.fromkeys(STATS, 0)}
        )
        client["roles"].append(role)
        for s in STATS:
            client[s] = _number(client[s] + stats[s], s)
    return roles, list(clients.values())


def _invocations(run: RunDir, code: int, started: float, ctx: GenContext) -> list[dict[str, Any]]:
    """Earlier invocations of this run and this one: when, exit code, resumed, spend."""

    def line(row: dict[str, Any]) -> dict[str, Any]:
        counters = row.get("counters", {})
        return {
            "started": row.get("started"),
            "exit_code": row.get("exit_code"),
            "resumed": row.get("resumed"),
            "restarted": row.get("restarted"),
            "wall_s": row.get("wall_s"),
            "requests_sent": int(sum(counters.get(f"{r}.requests_sent", 0) for r in ROLES)),
            "spent_usd": round(sum(counters.get(f"{r}.spent_usd", 0.0) for r in ROLES), 6),
        }

    now = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "exit_code": code,
        "resumed": run.resumed,
        "restarted": run.moved_to is not None,
        "wall_s": round(time.time() - started, 2),
        "counters": {f"{r}.{k}": v for r, c in ctx.role_stats.items() for k, v in c.items()},
    }
    return [line(r) for r in run.previous()] + [line(now)]


def build_manifest(
    ctx: GenContext, run: RunDir, records: list[Record], status: str, code: int, started: float
) -> dict[str, Any]:
    """The manifest; `started` is this invocation's start (epoch seconds)."""
    rejections: Counter[str] = Counter(r.dropped_by.rule for r in ctx.rejected if r.dropped_by)
    roles, clients = _teachers(ctx, run)
    invocations = _invocations(run, code, started, ctx)
    return {
        "status": status,
        "demo": ctx.demo,
        "run_dir": str(ctx.run_dir),
        "target": ctx.config.num_instructions,
        "rows": len(records),
        "rows_by_origin": dict(Counter(r.origin for r in records)),
        "rows_by_round": dict(Counter(str(r.round) for r in records)),
        "rows_by_category": dict(Counter(r.category or "(none)" for r in records)),
        "rows_by_turns": dict(
            Counter(str(sum(m.role == "user" for m in r.messages)) for r in records)
        ),
        "rejected": len(ctx.rejected),
        "rejected_by_rule": dict(rejections),
        "counts": dict(ctx.counts),
        # every figure below is summed over all invocations of this run
        "teachers": roles,  # per role: that role's calls only
        "teacher_clients": clients,  # per distinct teacher config: the sum of its roles
        **{s: _number(sum(c[s] for c in clients), s) for s in STATS},
        "seeds": len(ctx.seeds),
        "invocations": invocations,
        "wall_time_s": round(sum(float(i["wall_s"] or 0) for i in invocations), 2),
    }
