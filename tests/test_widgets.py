"""normlab.widgets: the slider-driven figure used instead of interact/Output widgets."""

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from normlab.widgets import figure_explorer, figure_to_png  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def line_figure(slope=1.0):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, slope])
    ax.set_ylim(-3, 3)
    return fig


def test_figure_to_png_returns_png_bytes_and_closes_the_figure():
    fig = line_figure()
    before = plt.get_fignums()
    data = figure_to_png(fig)
    assert data.startswith(PNG_MAGIC)
    assert fig.number in before and fig.number not in plt.get_fignums()


def test_explorer_shows_the_initial_figure_and_redraws_when_a_slider_moves():
    slope = widgets.FloatSlider(value=1.0, min=-2, max=2)
    box = figure_explorer(line_figure, slope=slope)
    image = box.children[-1]
    assert isinstance(image, widgets.Image) and bytes(image.value).startswith(PNG_MAGIC)
    first = bytes(image.value)
    slope.value = -2.0
    assert bytes(image.value).startswith(PNG_MAGIC) and bytes(image.value) != first
    assert box.children[0] is slope
    assert not plt.get_fignums(), "every drawn figure must be closed"


def test_explorer_without_sliders_is_an_error():
    with pytest.raises(ValueError, match="at least one slider"):
        figure_explorer(line_figure)
