"""The reports' figure canvas: matplotlib's Agg canvas used directly, saved as reproducible PNGs.

No pyplot and no global backend, so reports can be drawn from threads and servers; no software
version in the PNG, so the same report gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from matcher.atomic import atomic_path

__all__ = ["figure", "finish", "save"]


def figure(width: float = 6.0, height: float = 4.2) -> tuple[Figure, Axes]:
    """Return a new figure of `width` x `height` inches on the Agg canvas, and its one axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no GUI backend, no pyplot state
    return fig, fig.add_subplot()


def save(fig: Figure, path: Path) -> Path:
    """Return `path`, written whole with the figure as a PNG."""
    with atomic_path(path) as tmp:
        # No Software/version text in the PNG: the same report gives the same bytes.
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return path


def finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Set the title, axis labels and the light grid every report plot shares."""
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
