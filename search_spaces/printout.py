"""Text printouts: a spec's layers in the MobileNetV3 paper's layout (Tables 1 and 2), and rows
aligned in columns (plain text or Markdown) for any report.

("Table" in this project's code means a latency lookup table, :mod:`evaluators.latency.table`.)
"""

from __future__ import annotations

from collections.abc import Sequence

from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec

LAYER_COLUMNS = ("Input", "Operator", "exp size", "#out", "SE", "NL", "s")


def layer_rows(spec: ArchSpec) -> list[tuple[str, ...]]:
    """One row per operator, as the paper prints them (the last stage takes four rows)."""
    rows: list[tuple[str, ...]] = []
    for layer in spec.layers():
        shape = f"{layer.resolution}^2 x {layer.in_channels}"
        op = layer.op
        if isinstance(op, StemSpec):
            rows.append((shape, f"conv2d {op.kernel}x{op.kernel}", "-", str(op.channels), "-", op.act,
                         str(op.stride)))
        elif isinstance(op, BlockSpec):
            rows.append((shape, f"bneck {op.kernel}x{op.kernel}", str(op.exp), str(op.out),
                         "yes" if op.se else "-", op.act, str(op.stride)))
        elif isinstance(op, HeadSpec):
            size = layer.resolution
            rows.append((shape, "conv2d 1x1", "-", str(op.channels), "-", op.act, "1"))
            rows.append((f"{size}^2 x {op.channels}", f"pool {size}x{size}", "-", "-", "-", "-", "1"))
            rows.append((f"1^2 x {op.channels}", "conv2d 1x1 NBN", "-", str(op.hidden), "-", op.act, "1"))
            rows.append((f"1^2 x {op.hidden}", "conv2d 1x1 NBN", "-", str(layer.num_classes), "-", "-", "1"))
    return rows


def format_columns(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Align ``rows`` under ``header`` as plain text or a Markdown table."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    if markdown:
        lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    else:
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def format_layers(spec: ArchSpec, *, markdown: bool = False) -> str:
    """The layers of ``spec`` under :data:`LAYER_COLUMNS`, as plain text or Markdown."""
    return format_columns(LAYER_COLUMNS, layer_rows(spec), markdown=markdown)
