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

TOL_MUTED: dict[str, str] = {
    "rose": "#CC6677", "indigo": "#332288", "sand": "#DDCC77", "green": "#117733", "cyan": "#88CCEE",
    "wine": "#882255", "teal": "#44AA99", "olive": "#999933", "purple": "#AA4499",
}
"""Paul Tol's colour-blind-safe "muted" scheme: the colours beyond Okabe-Ito's eight (DyT, chapter 13's techniques)."""

NORM_COLORS: dict[str, str] = {
    "none": OKABE_ITO["black"],
    "batch": OKABE_ITO["blue"],
    "layer": OKABE_ITO["orange"],
    "weight": OKABE_ITO["bluish green"],
    "group": OKABE_ITO["vermillion"],
    "instance": OKABE_ITO["reddish purple"],
    "rms": OKABE_ITO["sky blue"],
    "input": OKABE_ITO["yellow"],
    "dyt": TOL_MUTED["wine"],  # Dynamic Tanh: Okabe-Ito's eight are taken
}
"""The colour of each normalizer, for every figure of the book."""

TECHNIQUE_COLORS: dict[str, str] = {
    "skipinit": TOL_MUTED["olive"],  # SkipInit/ReZero gate
    "fixup": TOL_MUTED["rose"],
    "nf": TOL_MUTED["indigo"],  # normalizer-free (scaled WS, with or without AGC)
    "mup": TOL_MUTED["teal"],  # μP (the standard parametrization is drawn as "none")
}
"""The colour of each technique that replaces a normalizer (chapter 13); BN and no normalization keep NORM_COLORS'."""

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


def plot_norm_cube(ax: plt.Axes, mask: np.ndarray, color: str, title: str | None = None,
                   other: str = "#EEEEEE", depth: float = 0.7) -> None:
    """Draw an N × C × (H·W) block of cells in oblique projection, the cells of ``mask`` in ``color``.

    ``mask`` is a boolean array of shape (N, C, H·W): the entries that share one statistic,
    as in Wu & He (2018), Figure 2. C runs left to right, H·W upwards and N into the page
    (example 0 in front); the three visible faces are drawn, each cell face in the colour of
    its cell. ``depth`` is the length of a step along N relative to a step along C.
    Used in chapter ``07_layernorm``.
    """
    from matplotlib.collections import PolyCollection

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must have shape (N, C, H·W); got shape {mask.shape}.")
    n, c, z = mask.shape
    dx, dy = depth * np.cos(np.pi / 6), depth * np.sin(np.pi / 6)

    def point(ci: float, ni: float, zi: float) -> tuple[float, float]:
        return ci + ni * dx, zi + ni * dy

    polygons, filled = [], []
    for ci in range(c):                      # front face: example 0
        for zi in range(z):
            polygons.append([point(ci, 0, zi), point(ci + 1, 0, zi), point(ci + 1, 0, zi + 1), point(ci, 0, zi + 1)])
            filled.append(mask[0, ci, zi])
    for ci in range(c):                      # top face: the last row of H·W
        for ni in range(n):
            polygons.append([point(ci, ni, z), point(ci + 1, ni, z), point(ci + 1, ni + 1, z), point(ci, ni + 1, z)])
            filled.append(mask[ni, ci, z - 1])
    for ni in range(n):                      # right face: the last channel
        for zi in range(z):
            polygons.append([point(c, ni, zi), point(c, ni + 1, zi), point(c, ni + 1, zi + 1), point(c, ni, zi + 1)])
            filled.append(mask[ni, c - 1, zi])
    faces = [color if f else other for f in filled]
    ax.add_collection(PolyCollection(polygons, facecolors=faces, edgecolors="0.35", linewidths=0.6))
    ax.set_xlim(-0.8, c + n * dx + 0.3)
    ax.set_ylim(-0.8, z + n * dy + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.annotate("C", (c / 2, -0.45), ha="center", va="center")
    ax.annotate("H·W", (-0.45, z / 2), ha="center", va="center", rotation=90)
    ax.annotate("N", point(c + 0.35, n / 2, 0), ha="left", va="center")
    if title:
        ax.set_title(title, fontsize=10)
