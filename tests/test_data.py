"""Tests for normlab.data: shapes, dtypes, determinism, caching and RNG hygiene."""

from __future__ import annotations

import random

import mnist1d.data as reference
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from normlab import data
from normlab.data import Dataset


def _global_rng_snapshot() -> tuple[object, tuple, torch.Tensor]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _assert_global_rngs_equal(before: tuple[object, tuple, torch.Tensor]) -> None:
    python_state, numpy_state, torch_state = before
    assert random.getstate() == python_state
    name, key, position, has_gauss, gauss = np.random.get_state()
    assert (name, position, has_gauss, gauss) == (numpy_state[0], *numpy_state[2:])
    np.testing.assert_array_equal(key, numpy_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)


def _assert_same_dataset(a: Dataset, b: Dataset) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.num_classes == b.num_classes


# ----------------------------------------------------------------------------
# Dataset


def _tiny(num_classes: int | None = 3) -> Dataset:
    y_dtype = torch.int64 if num_classes else torch.float32
    return Dataset(
        name="tiny",
        x_train=torch.zeros(6, 4),
        y_train=torch.zeros(6, dtype=y_dtype),
        x_test=torch.zeros(2, 4),
        y_test=torch.zeros(2, dtype=y_dtype),
        num_classes=num_classes,
    )


def test_dataset_properties_describe_features_and_task() -> None:
    assert _tiny(3).num_features == 4
    assert _tiny(3).is_classification
    assert not _tiny(None).is_classification


def test_dataset_to_moves_every_tensor_and_keeps_metadata() -> None:
    moved = _tiny(3).to("meta")
    assert {t.device.type for t in (moved.x_train, moved.y_train, moved.x_test, moved.y_test)} == {"meta"}
    assert (moved.name, moved.num_classes) == ("tiny", 3)


def test_dataset_is_frozen() -> None:
    with pytest.raises(AttributeError):
        _tiny().name = "other"  # type: ignore[misc]


def test_dataset_repr_is_one_short_line() -> None:
    text = repr(_tiny(3))
    assert text == "Dataset(name='tiny', train=(6, 4), test=(2, 4), num_classes=3, device=cpu)"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"y_train": torch.zeros(5, dtype=torch.int64)}, "y_train must have shape"),
        ({"x_test": torch.zeros(2, 5)}, "same features"),
        ({"x_train": torch.zeros(6)}, "x_train must have shape"),
        ({"y_test": torch.zeros(2)}, "must be int64"),
        ({"num_classes": 1}, "at least 2"),
    ],
)
def test_dataset_rejects_inconsistent_fields(changes: dict, message: str) -> None:
    import dataclasses

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(_tiny(3), **changes)


def test_dataset_rejects_integer_regression_targets() -> None:
    with pytest.raises(ValueError, match="must be floating point"):
        Dataset("r", torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), torch.zeros(1, 2), torch.zeros(1), None)


# ----------------------------------------------------------------------------
# MNIST-1D


def test_mnist1d_default_size_has_reference_shapes(tmp_path) -> None:
    ds = data.mnist1d(cache_dir=tmp_path)
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.num_features == 40
    assert set(ds.y_train.tolist()) == set(range(10))


def test_mnist1d_matches_the_reference_generator(tmp_path) -> None:
    args = reference.get_dataset_args()
    args.seed, args.num_samples = 7, 500
    expected = reference.make_dataset(args)
    ds = data.mnist1d(seed=7, num_samples=500, cache_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_train.numpy(), expected["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test.numpy(), expected["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train.numpy(), expected["y"])
    np.testing.assert_array_equal(ds.y_test.numpy(), expected["y_test"])


def test_mnist1d_is_cached_and_identical_on_second_call(tmp_path, monkeypatch) -> None:
    first = data.mnist1d(num_samples=500, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary files left behind

    def no_generation(*args, **kwargs):
        raise AssertionError("the second call regenerated MNIST-1D instead of loading the cache")

    monkeypatch.setattr(data, "_generate_mnist1d", no_generation)
    _assert_same_dataset(first, data.mnist1d(num_samples=500, cache_dir=tmp_path))


def test_mnist1d_cache_defaults_to_normlab_cache_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    data.mnist1d(num_samples=500)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]
    assert data.default_cache_dir() == tmp_path / "cache"


def test_mnist1d_cache_distinguishes_seed_and_size(tmp_path) -> None:
    a = data.mnist1d(seed=1, num_samples=500, cache_dir=tmp_path)
    b = data.mnist1d(seed=2, num_samples=500, cache_dir=tmp_path)
    c = data.mnist1d(seed=1, num_samples=600, cache_dir=tmp_path)
    assert not torch.equal(a.x_train, b.x_train)
    assert c.x_train.shape == (480, 40)
    assert len(list(tmp_path.iterdir())) == 3
    _assert_same_dataset(a, data.mnist1d(seed=1, num_samples=500, cache_dir=tmp_path))


def test_mnist1d_regenerates_a_corrupt_cache_file(tmp_path) -> None:
    fresh = data.mnist1d(num_samples=500, cache_dir=tmp_path)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(b"not a zip archive")
    _assert_same_dataset(fresh, data.mnist1d(num_samples=500, cache_dir=tmp_path))
    _assert_same_dataset(fresh, data.mnist1d(num_samples=500, cache_dir=tmp_path))


def test_mnist1d_leaves_global_rngs_untouched(tmp_path) -> None:
    random.seed(123)
    np.random.seed(123)
    before = _global_rng_snapshot()
    data.mnist1d(seed=3, num_samples=500, cache_dir=tmp_path)  # generates
    _assert_global_rngs_equal(before)
    data.mnist1d(seed=3, num_samples=500, cache_dir=tmp_path)  # loads the cache
    _assert_global_rngs_equal(before)


@pytest.mark.parametrize("num_samples", [0, 5, 505])
def test_mnist1d_rejects_sizes_that_are_not_multiples_of_ten(tmp_path, num_samples: int) -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        data.mnist1d(num_samples=num_samples, cache_dir=tmp_path)


# ----------------------------------------------------------------------------
# scikit-learn datasets


def test_digits_standardizes_with_train_statistics_only() -> None:
    raw = data.digits(seed=3, standardize=False)
    scaled = data.digits(seed=3)
    mean = raw.x_train.double().mean(0)
    std = raw.x_train.double().std(0, unbiased=False)
    constant = std == 0
    assert constant.any(), "digits has constant pixels; the test relies on them"
    std[constant] = 1.0
    torch.testing.assert_close(scaled.x_train.double(), (raw.x_train.double() - mean) / std, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled.x_test.double(), (raw.x_test.double() - mean) / std, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(scaled.x_test).all()
    # The test split, standardized with train statistics, is not exactly centred.
    assert scaled.x_test.mean(0).abs().max() > 1e-3


def test_digits_split_is_stratified_and_seeded() -> None:
    ds = data.digits(seed=0, test_fraction=0.25)
    assert ds.x_train.shape[1] == 64 and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797
    train_share = torch.bincount(ds.y_train, minlength=10) / len(ds.y_train)
    test_share = torch.bincount(ds.y_test, minlength=10) / len(ds.y_test)
    assert (train_share - test_share).abs().max() < 0.01
    _assert_same_dataset(ds, data.digits(seed=0, test_fraction=0.25))
    assert not torch.equal(ds.y_test, data.digits(seed=1, test_fraction=0.25).y_test)


def test_diabetes_keeps_raw_unscaled_features() -> None:
    ds = data.diabetes(seed=0)
    bunch = load_diabetes(scaled=False)
    assert ds.num_classes is None and not ds.is_classification
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.float32
    assert ds.y_train.ndim == 1
    assert len(ds.x_train) + len(ds.x_test) == 442 and len(ds.x_test) == round(442 * 0.2)
    rows = torch.cat([ds.x_train, ds.x_test]).double().numpy()
    order = np.lexsort(rows.T[::-1])
    expected = bunch.data[np.lexsort(bunch.data.T[::-1])]
    np.testing.assert_allclose(rows[order], expected, rtol=1e-6)
    stds = ds.x_train.std(0)
    assert stds.max() / stds.min() > 30  # raw scales differ by orders of magnitude


def test_diabetes_split_depends_on_seed_only() -> None:
    _assert_same_dataset(data.diabetes(seed=4), data.diabetes(seed=4))
    assert not torch.equal(data.diabetes(seed=4).y_test, data.diabetes(seed=5).y_test)


# ----------------------------------------------------------------------------
# synthetic datasets


@settings(max_examples=25, deadline=None)
@given(
    num_samples=st.integers(10, 300),
    num_features=st.integers(1, 30),
    num_classes=st.integers(2, 6),
    test_fraction=st.floats(0.1, 0.9),
    seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_classification_has_declared_shapes_and_dtypes(
    num_samples: int, num_features: int, num_classes: int, test_fraction: float, seed: int
) -> None:
    ds = data.gaussian_classification(num_samples, num_features, num_classes, seed=seed, test_fraction=test_fraction)
    num_test = round(num_samples * test_fraction)
    assert ds.x_train.shape == (num_samples - num_test, num_features)
    assert ds.x_test.shape == (num_test, num_features)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    labels = torch.cat([ds.y_train, ds.y_test])
    counts = torch.bincount(labels, minlength=num_classes)
    assert len(counts) == num_classes and counts.max() - counts.min() <= 1
    assert ds.num_classes == num_classes


@settings(max_examples=25, deadline=None)
@given(
    num_samples=st.integers(5, 300),
    num_features=st.integers(1, 30),
    test_fraction=st.floats(0.2, 0.8),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_regression_has_declared_shapes_and_dtypes(
    num_samples: int, num_features: int, test_fraction: float, seed: int
) -> None:
    ds = data.linear_regression(num_samples, num_features, seed=seed, test_fraction=test_fraction)
    num_test = round(num_samples * test_fraction)
    assert ds.x_train.shape == (num_samples - num_test, num_features)
    assert ds.y_test.shape == (num_test,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.float32
    assert ds.num_classes is None


def test_gaussian_class_means_lie_at_distance_separation_from_origin() -> None:
    ds = data.gaussian_classification(num_samples=20000, num_features=5, num_classes=3, separation=4.0)
    for k in range(3):
        mean = ds.x_train[ds.y_train == k].double().mean(0)
        assert abs(mean.norm().item() - 4.0) < 0.1
        within = ds.x_train[ds.y_train == k].double() - mean
        assert abs(within.std().item() - 1.0) < 0.03


def test_linear_regression_scales_each_column_by_its_feature_scale() -> None:
    scales = [0.01, 1.0, 100.0]
    ds = data.linear_regression(num_samples=20000, num_features=3, feature_scales=scales)
    ratio = ds.x_train.double().std(0) / torch.tensor(scales, dtype=torch.float64)
    assert torch.all((ratio - 1).abs() < 0.05)


def test_linear_regression_targets_are_linear_plus_noise_of_given_size() -> None:
    ds = data.linear_regression(num_samples=4000, num_features=5, noise=0.5, seed=2)
    x = torch.cat([ds.x_train, ds.x_test]).double()
    y = torch.cat([ds.y_train, ds.y_test]).double()
    w = torch.linalg.lstsq(x, y[:, None]).solution
    residual = y - (x @ w)[:, 0]
    assert abs(residual.std().item() - 0.5) < 0.03
    exact = data.linear_regression(num_samples=200, num_features=5, noise=0.0, seed=2)
    w = torch.linalg.lstsq(exact.x_train.double(), exact.y_train.double()[:, None]).solution
    torch.testing.assert_close((exact.x_test.double() @ w)[:, 0], exact.y_test.double(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("make", [data.gaussian_classification, data.linear_regression])
def test_synthetic_datasets_are_deterministic_by_seed(make) -> None:
    _assert_same_dataset(make(seed=11), make(seed=11))
    assert not torch.equal(make(seed=11).x_train, make(seed=12).x_train)


@pytest.mark.parametrize(
    "make",
    [
        data.gaussian_classification,
        data.linear_regression,
        data.digits,
        data.diabetes,
    ],
)
def test_loaders_leave_global_rngs_untouched(make) -> None:
    before = _global_rng_snapshot()
    make(seed=5)
    _assert_global_rngs_equal(before)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: data.gaussian_classification(num_classes=1), "num_classes must be at least 2"),
        (lambda: data.gaussian_classification(test_fraction=0.0), "strictly between 0 and 1"),
        (lambda: data.gaussian_classification(test_fraction=1.0), "strictly between 0 and 1"),
        (lambda: data.gaussian_classification(num_samples=1), "empty train or test"),
        (lambda: data.gaussian_classification(separation=-1.0), "separation"),
        (lambda: data.gaussian_classification(num_features=0), "num_features"),
        (lambda: data.linear_regression(feature_scales=[1.0, 2.0]), "one entry per feature"),
        (lambda: data.linear_regression(num_features=2, feature_scales=[1.0, 0.0]), "finite and positive"),
        (lambda: data.linear_regression(noise=-0.1), "noise"),
        (lambda: data.digits(test_fraction=1.5), "strictly between 0 and 1"),
        (lambda: data.diabetes(test_fraction=-0.2), "strictly between 0 and 1"),
    ],
)
def test_loaders_reject_bad_arguments_with_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
