"""One look for every figure in the book.

Colours come from the Okabe-Ito palette, which stays distinguishable under the common
forms of colour blindness. Each normalizer keeps one colour across all chapters, so a
reader who has learnt "blue is BatchNorm" never has to relearn it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}

NORM_COLORS: dict[str, str] = {
    "none": OKABE_ITO["black"],
    "batch": OKABE_ITO["blue"],
    "layer": OKABE_ITO["orange"],
    "weight": OKABE_ITO["bluish green"],
    "group": OKABE_ITO["vermillion"],
    "instance": OKABE_ITO["reddish purple"],
    "rms": OKABE_ITO["sky blue"],
    "input": OKABE_ITO["yellow"],
}
"""The colour of each normalizer, for every figure of the book."""

CYCLE: list[str] = [OKABE_ITO[k] for k in ("blue", "orange", "bluish green", "vermillion",
                                           "reddish purple", "sky blue", "black", "yellow")]
"""Colour cycle for figures whose lines are not normalizers (learning rates, seeds...)."""


def norm_color(norm: str) -> str:
    """The book's colour for a normalizer name such as "batch" or "none"."""
    try:
        return NORM_COLORS[norm]
    except KeyError:
        raise ValueError(
            f"no colour for normalizer {norm!r}; known: {', '.join(NORM_COLORS)}"
        ) from None


def use_book_style() -> None:
    """Set matplotlib defaults for the book: colour-blind-safe cycle, readable sizes."""
    mpl.rcParams.update({
        "axes.prop_cycle": mpl.cycler(color=CYCLE),
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 11,
        "axes.titlesize": 11,
        "legend.frameon": False,
        "image.cmap": "viridis",
    })


def plot_quadratic_contours(ax: plt.Axes, loss, extent: Sequence[float], levels: int = 12,
                            resolution: int = 200) -> None:
    """Draw level sets of a 2-D loss on ``ax`` over ``extent = (xmin, xmax, ymin, ymax)``.

    ``loss`` maps an array of shape (n, 2) to n losses. Levels are spaced on a square-root
    scale so that both the narrow valley floor and the steep walls show.
    """
    xmin, xmax, ymin, ymax = extent
    xs, ys = np.meshgrid(np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution))
    zs = loss(np.column_stack([xs.ravel(), ys.ravel()])).reshape(xs.shape)
    lo, hi = zs.min(), zs.max()
    ax.contour(xs, ys, zs, levels=lo + (hi - lo) * np.linspace(0.0, 1.0, levels) ** 2,
               colors="0.6", linewidths=0.8)
    ax.set_aspect("equal")


def plot_trajectory(ax: plt.Axes, trajectory: np.ndarray, color: str = OKABE_ITO["vermillion"],
                    label: str | None = None) -> None:
    """Draw an optimisation path (rows are iterates in 2-D) with its start marked."""
    trajectory = np.asarray(trajectory)
    ax.plot(trajectory[:, 0], trajectory[:, 1], "-o", color=color, markersize=3,
            linewidth=1.2, label=label)
    ax.plot(*trajectory[0], "s", color=color, markersize=6)
