"""Drawing helpers shared by the figures: colours, a new figure, a stored series plotted with
the path of its numbers as its ``gid``, axis finishing, rendering to PNG/SVG bytes."""
from __future__ import annotations

import io

from matplotlib.figure import Figure

__all__ = ["COLORS", "resolve", "new", "plot", "finish", "render"]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
          "#bcbd22", "#e377c2"]


def resolve(data, path: str):
    """The value at a '/'-separated path inside figure data: list indices are integers and '*'
    maps over a list ("rows/*/eps" is the list of every row's eps)."""

    def walk(node, parts):
        if not parts:
            return node
        head, rest = parts[0], parts[1:]
        if head == "*":
            return [walk(item, rest) for item in node]
        return walk(node[int(head)] if isinstance(node, list) else node[head], rest)

    return walk(data, path.split("/"))


def new(width=6.4, height=4.2):
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def plot(ax, data, xpath, ypath, **kw):
    """Plot stored series y against x (paths into ``data``) and tag the line with both paths."""
    x, y = resolve(data, xpath), resolve(data, ypath)
    pts = [(a, b) for a, b in zip(x, y) if b is not None and b > 0]
    (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
    line.set_gid(f"x:{xpath}|y:{ypath}")
    return line


def finish(ax, title, xlabel, ylabel, legend="inside"):
    """Title, labels, grid; legend 'inside' (best place), 'below' (under the axes) or None."""
    from matplotlib.ticker import NullFormatter

    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_formatter(NullFormatter())
    if legend == "inside":
        ax.legend(fontsize=8, framealpha=0.9)
    elif legend == "below":
        ax.figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)



def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (reproducible: no date or software stamp)."""
    import matplotlib

    buf = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "imaml-verify"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
    elif fmt == "png":
        fig.savefig(buf, format="png", metadata={"Software": None})
    else:
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    return buf.getvalue()
