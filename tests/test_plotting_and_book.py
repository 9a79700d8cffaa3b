"""Tests for normlab.plotting (the book's colours and figure helpers) and normlab.book (glue)."""

from __future__ import annotations

import inspect
import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import is_color_like, same_color, to_hex  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402

from normlab import book, plotting  # noqa: E402
from normlab.quadratic import Quadratic  # noqa: E402


@pytest.fixture
def ax():
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def _hexes(colors) -> list[str]:
    return [to_hex(c) for c in colors]


# ----------------------------------------------------------------------------
# colours


def test_okabe_ito_palette_has_the_published_values():
    # Okabe & Ito (2008), "Color Universal Design"
    assert {name: color.upper() for name, color in plotting.OKABE_ITO.items()} == {
        "black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9",
        "bluish green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
        "vermillion": "#D55E00", "reddish purple": "#CC79A7",
    }


def test_every_normalizer_and_technique_colour_is_colour_blind_safe_and_distinct():
    palette = set(_hexes(plotting.OKABE_ITO.values())) | set(_hexes(plotting.TOL_MUTED.values()))
    colors = _hexes([*plotting.NORM_COLORS.values(), *plotting.TECHNIQUE_COLORS.values()])
    assert all(is_color_like(c) for c in colors)
    assert set(colors) <= palette
    assert len(set(colors)) == len(colors)
    assert {"none", "batch", "layer", "weight", "group", "instance", "rms"} <= set(plotting.NORM_COLORS)


def test_every_cycle_colour_is_from_okabe_ito_and_distinct():
    palette = set(_hexes(plotting.OKABE_ITO.values()))
    cycle = _hexes(plotting.CYCLE)
    assert set(cycle) <= palette
    assert len(set(cycle)) == len(cycle) == len(palette)


@pytest.mark.parametrize("norm", list(plotting.NORM_COLORS))
def test_norm_color_returns_the_colour_of_each_normalizer(norm):
    assert plotting.norm_color(norm) == plotting.NORM_COLORS[norm]


def test_norm_color_of_batchnorm_is_okabe_ito_blue():
    assert plotting.norm_color("batch") == plotting.OKABE_ITO["blue"]
    assert plotting.norm_color("none") == plotting.OKABE_ITO["black"]


@pytest.mark.parametrize("name", ["bn", "Batch", ""])
def test_norm_color_rejects_an_unknown_name_and_lists_the_known_ones(name):
    known = ", ".join(plotting.NORM_COLORS)
    with pytest.raises(ValueError, match=re.escape(f"no colour for normalizer {name!r}; known: {known}")):
        plotting.norm_color(name)


def test_use_book_style_sets_the_colour_cycle_to_cycle():
    with matplotlib.rc_context():
        matplotlib.rcParams["axes.prop_cycle"] = matplotlib.cycler(color=["red", "green"])
        plotting.use_book_style()
        assert _hexes(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]) == _hexes(plotting.CYCLE)
        fig, axes = plt.subplots()
        try:
            lines = [axes.plot([0, 1], [0, k])[0] for k in range(3)]
            assert [to_hex(line.get_color()) for line in lines] == _hexes(plotting.CYCLE[:3])
        finally:
            plt.close(fig)


# ----------------------------------------------------------------------------
# figure helpers


def test_plot_quadratic_contours_draws_level_sets_of_the_loss(ax):
    h = np.array([[3.0, 1.0], [1.0, 1.0]])
    problem = Quadratic(hessian=h, minimizer=np.array([0.5, -0.25]))
    extent = (-2.0, 3.0, -1.0, 1.5)
    calls = []

    def loss(points):
        calls.append(points.copy())
        return problem.loss(points)

    plotting.plot_quadratic_contours(ax, loss, extent, levels=7, resolution=120)

    # one call on the whole grid, rows spanning the extent
    assert len(calls) == 1 and calls[0].shape == (120 * 120, 2)
    np.testing.assert_allclose([calls[0][:, 0].min(), calls[0][:, 0].max(),
                                calls[0][:, 1].min(), calls[0][:, 1].max()], extent)
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 1
    levels = contours[0].levels
    lo, hi = problem.loss(calls[0]).min(), problem.loss(calls[0]).max()
    np.testing.assert_allclose(levels, lo + (hi - lo) * np.linspace(0, 1, 7) ** 2, rtol=1e-12)
    # every drawn vertex lies on its level set (up to the grid's linear interpolation)
    drawn = 0
    for level, path in zip(levels, contours[0].get_paths()):
        if len(path.vertices) == 0:
            continue
        drawn += 1
        np.testing.assert_allclose(problem.loss(path.vertices), level, atol=2e-4 * (hi - lo))
        assert np.all(path.vertices[:, 0] >= extent[0] - 1e-9) and np.all(path.vertices[:, 0] <= extent[1] + 1e-9)
        assert np.all(path.vertices[:, 1] >= extent[2] - 1e-9) and np.all(path.vertices[:, 1] <= extent[3] + 1e-9)
    assert drawn >= 5
    assert ax.get_aspect() == 1.0


def test_plot_trajectory_draws_the_path_and_marks_its_start(ax):
    path = np.array([[1.0, 2.0], [0.5, -1.0], [0.25, 0.5], [0.0, 0.0]])
    plotting.plot_trajectory(ax, path, color=plotting.norm_color("batch"), label="BatchNorm")
    assert len(ax.lines) == 2
    line, start = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), path[:, 0])
    np.testing.assert_array_equal(line.get_ydata(), path[:, 1])
    assert line.get_label() == "BatchNorm" and line.get_marker() == "o"
    np.testing.assert_array_equal(np.ravel(start.get_xdata()), [1.0])
    np.testing.assert_array_equal(np.ravel(start.get_ydata()), [2.0])
    assert start.get_marker() == "s"
    assert same_color(line.get_color(), plotting.OKABE_ITO["blue"])
    assert same_color(start.get_color(), plotting.OKABE_ITO["blue"])
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["BatchNorm"]  # the start marker does not add a legend entry


def test_plot_trajectory_defaults_to_vermillion(ax):
    plotting.plot_trajectory(ax, [[0.0, 0.0], [1.0, 1.0]])
    assert all(same_color(line.get_color(), plotting.OKABE_ITO["vermillion"]) for line in ax.lines)


# ----------------------------------------------------------------------------
# book: numbers for glue


@pytest.mark.parametrize(("value", "expected", "kind"), [
    (np.float64(0.25), 0.25, float),
    (np.float32(0.5), 0.5, float),
    (np.float16(1.5), 1.5, float),
    (np.int64(3), 3, int),
    (np.int32(-7), -7, int),
    (np.uint8(200), 200, int),
    (np.bool_(True), True, bool),
    (np.bool_(False), False, bool),
    (np.array(2.5), 2.5, float),
    (np.array(4, dtype=np.int64), 4, int),
    (np.array(True), True, bool),
    (True, True, bool),
    (3, 3, int),
    (0.125, 0.125, float),
    (torch.tensor(0.75, dtype=torch.float64), 0.75, float),
    (torch.tensor(5), 5, int),
    (torch.tensor(2.0, requires_grad=True).abs(), 2.0, float),
])
def test_as_python_number_converts_numpy_scalars_and_0d_arrays(value, expected, kind):
    out = book.as_python_number(value)
    assert type(out) is kind  # np.float64 is a float subclass: isinstance would not do
    assert out == expected
    assert not repr(out).startswith("np.")


@pytest.mark.parametrize("value", ["0.5", [1, 2], (np.float64(1.0),), np.array([1.0, 2.0]), torch.ones(2), None])
def test_as_python_number_leaves_other_values_alone(value):
    assert book.as_python_number(value) is value


def test_glue_stores_a_python_number_without_displaying_it(monkeypatch):
    myst_nb = pytest.importorskip("myst_nb")
    assert "display" in inspect.signature(myst_nb.glue).parameters  # the API we call exists
    calls = []

    def fake_glue(name, variable, display=True):
        calls.append((name, variable, display))

    monkeypatch.setattr(myst_nb, "glue", fake_glue)
    monkeypatch.delenv(book.GLUE_RECORD_ENV, raising=False)  # make test records the notebooks' glue; not this
    book.glue("steps_k10", np.int64(42))
    book.glue("ratio", np.float64(0.5))
    book.glue("label", "raw")
    assert calls == [("steps_k10", 42, False), ("ratio", 0.5, False), ("label", "raw", False)]
    assert [type(value) for _, value, _ in calls] == [int, float, str]


def test_glue_records_each_value_for_the_reproducibility_check(monkeypatch, tmp_path):
    """With $NORMLAB_GLUE_RECORD set, glue appends name and repr to <record>/<notebook>.jsonl (make test's
    second execution; tests/after_notebooks/test_glue_reproducible.py compares it with the build)."""
    myst_nb = pytest.importorskip("myst_nb")
    monkeypatch.setattr(myst_nb, "glue", lambda name, variable, display=True: None)
    monkeypatch.delenv(book.GLUE_RECORD_ENV, raising=False)
    book.glue("not_recorded", 1.0)
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv(book.GLUE_RECORD_ENV, str(tmp_path / "record"))
    monkeypatch.delenv(book.NOTEBOOK_ENV, raising=False)
    book.glue("outside_a_notebook", 1.0)  # e.g. a grading run in the test process: nothing recorded
    assert not (tmp_path / "record").exists()
    monkeypatch.setenv(book.NOTEBOOK_ENV, "02_batchnorm")
    book.glue("ratio", np.float64(0.5))
    book.glue("label", "raw")
    book.glue("ratio", torch.tensor(0.25))
    lines = (tmp_path / "record" / "02_batchnorm.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"name": "ratio", "text": "0.5"}, {"name": "label", "text": "'raw'"}, {"name": "ratio", "text": "0.25"}]
