"""plotting.plot_norm_cube, the cube figure of the LayerNorm chapter."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from normlab import plotting  # noqa: E402


def test_cube_colours_exactly_the_visible_faces_of_the_mask():
    n, c, z = 3, 4, 2
    mask = np.zeros((n, c, z), dtype=bool)
    mask[0, 1, :] = True                       # front face: 2 cells; top face: 1 cell (row z-1)
    fig, ax = plt.subplots()
    plotting.plot_norm_cube(ax, mask, "#ff0000", "test")
    (faces,) = ax.collections
    colours = faces.get_facecolors()
    assert len(colours) == c * z + c * n + n * z   # front, top, right
    red = np.all(np.isclose(colours, mcolors.to_rgba("#ff0000")), axis=1)
    assert red.sum() == 2 + 1
    plt.close(fig)


def test_cube_rejects_a_mask_that_is_not_three_dimensional():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_norm_cube(ax, np.zeros((2, 3)), "red")
    plt.close(fig)
