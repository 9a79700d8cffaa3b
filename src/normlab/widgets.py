"""Interactive figures for the chapters: sliders that redraw a matplotlib figure.

:func:`figure_explorer` shows the figure as an ``ipywidgets.Image`` (PNG bytes) and
redraws it when a slider moves. It deliberately avoids ``interact`` and ``Output``
widgets: when a notebook is executed headlessly (the book build, nbval), capturing
output into an ``Output`` widget can leave nbclient waiting for minutes (seen here on
the build of chapter 1; jupyter/nbclient#312). An ``Image`` widget carries its picture
as widget state, so the built page shows the initial figure and a live kernel updates it.
Used by chapter ``01_why_normalize``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib.pyplot as plt


def figure_to_png(fig: plt.Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes; the figure is closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure_explorer(draw: Callable[..., plt.Figure], **sliders):
    """A box of ``sliders`` above an image of ``draw(**slider_values)``, redrawn on change.

    ``sliders`` maps each keyword argument of ``draw`` to an ipywidgets value widget
    (``FloatSlider``, ``FloatLogSlider``, ...). ``draw`` must return a new figure.
    """
    import ipywidgets as widgets  # a dependency of the book, not of normlab's core

    if not sliders:
        raise ValueError("figure_explorer needs at least one slider, e.g. lr=widgets.FloatSlider(...)")
    image = widgets.Image(format="png")

    def redraw(_change=None) -> None:
        image.value = figure_to_png(draw(**{name: s.value for name, s in sliders.items()}))

    for slider in sliders.values():
        slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([*sliders.values(), image])
