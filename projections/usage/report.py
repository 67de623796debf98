"""Usage as text: CSV (streamed by the API) and the table ``kf usage report`` prints."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from projections.usage.view import SEARCH_MODES, Usage

CSV_FIGURES = (
    "questions", "answers", "failures", "input_tokens", "output_tokens", "cost_charged_usd",
    "unpriced_answers", "cost_current_usd", "unpriced_now", "cost_repriced_usd",
    "unpriced_repriced", "not_repriced", "latency_ms_p50", "latency_ms_p95",
    "documents", "bytes", "pages", "chunks", "embedding_tokens",
)  # fmt: skip


def csv_lines(groups: Iterator[Usage], names: tuple[str, ...]) -> Iterator[bytes]:
    """The groups as CSV: one column per group_by, per figure, and per search mode."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*names, *CSV_FIGURES, *(f"searches_{m}" for m in SEARCH_MODES)])
    for usage in groups:
        figures = [getattr(usage, f) for f in CSV_FIGURES]
        writer.writerow(
            [
                *(usage.group[n] or "" for n in names),
                *("" if v is None else v for v in figures),
                *(usage.searches.get(m, 0) for m in SEARCH_MODES),
            ]
        )
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


TABLE_COLUMNS = (
    ("questions", "questions"), ("answers", "answers"), ("failures", "failed"),
    ("input_tokens", "in tokens"), ("output_tokens", "out tokens"),
    ("cost_charged_usd", "charged $"), ("unpriced_answers", "unpriced"),
    ("cost_current_usd", "now $"), ("unpriced_now", "unpriced now"),
    ("latency_ms_p50", "p50 ms"), ("latency_ms_p95", "p95 ms"),
    ("documents", "docs"), ("bytes", "bytes"), ("pages", "pages"), ("chunks", "chunks"),
    ("embedding_tokens", "embed tokens"),
)  # fmt: skip


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:f}" if hasattr(value, "quantize") else str(value)


def table(groups: Iterable[Usage], total: Usage, names: tuple[str, ...]) -> str:
    """The groups and their total as an aligned text table (numbers right-aligned)."""
    columns = list(TABLE_COLUMNS)
    if total.cost_repriced_usd is not None:  # a re-pricing run's figures beside the charges
        at = columns.index(("unpriced_now", "unpriced now")) + 1
        columns[at:at] = [("cost_repriced_usd", "repriced $"), ("not_repriced", "not repriced")]
    header = [*names, *(title for _, title in columns), "searches"]
    lines = []
    for usage in [*groups, total]:
        searches = " ".join(f"{m}={n}" for m, n in usage.searches.items() if n) or "-"
        lines.append(
            [
                *(usage.group.get(n) or "-" for n in names),
                *(_cell(getattr(usage, field)) for field, _ in columns),
                searches,
            ]
        )
    if names:
        lines[-1][0] = "TOTAL"
    else:
        header.insert(0, "")
        for line in lines:
            line.insert(0, "TOTAL")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    first_figure = len(names) or 1

    def render(row: list[str]) -> str:
        cells = [
            cell.ljust(width) if i < first_figure or i == len(row) - 1 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [*map(render, lines[:-1]), rule] if len(lines) > 1 else []
    return "\n".join([render(header), rule, *body, render(lines[-1])])
