"""Aligned plain-text tables for the command line.

Numbers are right-aligned, text left-aligned; a missing value prints as ``-``.
Columns are separated by two spaces and no line ends in spaces, so output
can be read by people and cut by ``awk`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cell", "render", "seconds"]

Row = Sequence[object]


def cell(value: object) -> str:
    """How one value prints in a table: ``-`` for None, ``yes``/``no`` for booleans."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def seconds(value: float | None) -> str:
    """A duration for people: ``9.8s``, ``-`` when unknown."""
    return "-" if value is None else f"{value:.1f}s"


def _numeric(values: Sequence[object]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in present
    )


def render(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """The table as text, header first; a header line alone when there are no rows."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in headers]
    right = [_numeric(col) for col in columns]
    texts = [[cell(v) for v in row] for row in rows]
    widths = [
        max([len(h), *(len(t[i]) for t in texts)]) for i, h in enumerate(headers)
    ]
    lines = []
    for row in [list(headers), *texts]:
        parts = [
            value.rjust(widths[i]) if right[i] else value.ljust(widths[i])
            for i, value in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
