"""What the run page draws: the pipeline's DAG with each stage's state, and a waterfall of every
stage attempt on the run's time line."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline import Run, StageRun, registry

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 170, 50, 60, 24, 12


@dataclass
class Node:
    name: str
    state: str  # a stage status, or "not_started"
    attempts: int
    x: int
    y: int
    w: int = NODE_W
    h: int = NODE_H

    @property
    def label(self) -> str:
        return self.state.replace("_", " ")

    @property
    def cx_right(self) -> int:
        return self.x + self.w

    @property
    def cy(self) -> int:
        return self.y + self.h // 2


@dataclass
class Edge:
    path: str
    state: str


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    problem: str | None = None


def build_graph(run: Run, rows: dict[str, StageRun]) -> Graph:
    """Stages in columns by depth (a stage sits one column right of its deepest parent), edges
    from each `after` parent; nodes keyed by state for the stylesheet's colours."""
    try:
        pipeline = registry.get(run.pipeline)
    except Exception as exc:  # a run of a pipeline no longer declared: draw what the database knows
        pipeline = None
        problem = str(exc)
    else:
        problem = None
    if pipeline is not None:
        stages = [(s.name, tuple(s.after)) for s in pipeline.stages.values()]
    else:
        names = list(rows)
        stages = [(name, (names[i - 1],) if i else ()) for i, name in enumerate(names)]
    depth: dict[str, int] = {}
    for name, after in stages:
        depth[name] = 1 + max((depth[p] for p in after if p in depth), default=-1)
    columns: dict[int, list[str]] = {}
    for name, _ in stages:
        columns.setdefault(depth[name], []).append(name)
    graph = Graph(problem=problem)
    tallest = max((len(c) for c in columns.values()), default=1)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    positions: dict[str, Node] = {}
    for column, names in sorted(columns.items()):
        block = len(names) * NODE_H + (len(names) - 1) * ROW_GAP
        top = (height - block) // 2
        for i, name in enumerate(names):
            row = rows.get(name)
            node = Node(name=name, state=row.status if row else "not_started", attempts=row.attempts if row else 0,
                        x=PAD + column * (NODE_W + COL_GAP), y=top + i * (NODE_H + ROW_GAP))
            positions[name] = node
            graph.nodes.append(node)
    for name, after in stages:
        child = positions[name]
        for parent_name in after:
            parent = positions.get(parent_name)
            if parent is None:
                continue
            x1, y1, x2, y2 = parent.cx_right, parent.cy, child.x, child.cy
            mid = (x1 + x2) // 2
            graph.edges.append(Edge(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}",
                                    "done" if parent.state == "succeeded" else "waiting"))
    graph.width = PAD * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * COL_GAP
    graph.height = height
    return graph


@dataclass
class Bar:
    stage: str
    attempt: int | None
    outcome: str
    start: datetime
    end: datetime
    left: float = 0.0  # percent of the time line
    width: float = 0.0
    error: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        parsed = parse_datetime(value)
        return parsed
    return None


def build_waterfall(run: Run, stages: list[StageRun], now: datetime | None = None) -> dict[str, Any]:
    """One bar per attempt: the failed ones from `attempt_log` (their end and duration), the
    current or last one from the stage row (started_at to finished_at, or to now while running)."""
    now = now or timezone.now()
    bars: list[Bar] = []
    for row in stages:
        for entry in row.attempt_log or []:
            end = _moment(entry.get("finished_at"))
            if end is None:
                continue
            start = end - timedelta(milliseconds=float(entry.get("duration_ms") or 0))
            bars.append(Bar(row.stage, entry.get("attempt"), "failed", start, end, error=entry.get("error", "")))
        if row.started_at is None:
            continue
        if row.status == "running":
            bars.append(Bar(row.stage, row.attempts, "running", row.started_at, now))
        elif row.status in ("succeeded", "cancelled") and row.finished_at:
            start = row.started_at if row.started_at <= row.finished_at else row.finished_at
            bars.append(Bar(row.stage, row.attempts, row.status, start, row.finished_at))
    if not bars:
        return {"bars": [], "total_ms": 0, "ticks": []}
    origin = min([b.start for b in bars] + [t for t in (run.started_at, run.created_at) if t])
    end = max([b.end for b in bars] + [t for t in (run.finished_at,) if t])
    total = max((end - origin).total_seconds(), 0.001)
    for bar in bars:
        bar.left = round(100 * (bar.start - origin).total_seconds() / total, 3)
        bar.width = round(max(0.4, 100 * (bar.end - bar.start).total_seconds() / total), 3)
        bar.left = min(bar.left, 100 - bar.width)
    bars.sort(key=lambda b: (b.start, b.stage))
    ticks = [{"left": 25 * i, "label": _short(total * i / 4)} for i in range(5)]
    return {"bars": bars, "total_ms": total * 1000, "ticks": ticks, "origin": origin}


def _short(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
