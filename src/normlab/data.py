"""Datasets for the book's experiments, as torch tensors, deterministic by seed.

Every loader returns a :class:`Dataset` with a train and a test split. Randomness
comes only from a local ``numpy.random.default_rng(seed)`` (or, for MNIST-1D, from
the generator's own seeding, with the caller's global RNG state restored), so a
loader never disturbs the random streams of the code that calls it.

Contents:

- :class:`Dataset`: the frozen container every chapter passes to ``train``.
- :func:`mnist1d`: MNIST-1D generated offline and cached on disk.
- :func:`digits`: scikit-learn's bundled 8x8 digits, optionally standardized.
- :func:`diabetes`: scikit-learn's diabetes regression data, raw features.
- :func:`gaussian_classification`: class-conditional Gaussians.
- :func:`linear_regression`: y = X w* + noise with per-feature scales.
- :func:`epoch_batches`: the minibatch sampler of every training loop.
- :func:`delayed_copy`: random sequences and their copy delayed by a few steps, the RNN task of
  chapter ``07_layernorm``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import random
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Dataset",
    "default_cache_dir",
    "delayed_copy",
    "diabetes",
    "digits",
    "epoch_batches",
    "gaussian_classification",
    "linear_regression",
    "mnist1d",
]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split of features and targets, as torch tensors.

    ``x_train`` and ``x_test`` are float32 of shape (n, num_features). For
    classification (``num_classes`` >= 2) the targets are int64 class labels in
    ``[0, num_classes)``; for regression (``num_classes is None``) they are float32
    of shape (n,). Equality is identity: compare tensors explicitly.
    Used by every chapter through ``normlab.train.train``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 2:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} must have shape (n, features); got {tuple(x.shape)}."
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must have shape ({x.shape[0]},) to match x_{split}; "
                    f"got {tuple(y.shape)}."
                )
            if self.num_classes is not None and y.dtype != torch.int64:
                raise ValueError(
                    f"Dataset {self.name!r}: classification labels y_{split} must be int64; got {y.dtype}. "
                    "Convert with .long(), or pass num_classes=None for regression."
                )
            if self.num_classes is None and not y.is_floating_point():
                raise ValueError(
                    f"Dataset {self.name!r}: regression targets y_{split} must be floating point; got {y.dtype}. "
                    "Convert with .float(), or pass num_classes for classification."
                )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(
                f"Dataset {self.name!r}: train has {self.x_train.shape[1]} features but test has "
                f"{self.x_test.shape[1]}; both splits must have the same features."
            )
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(
                f"Dataset {self.name!r}: num_classes must be at least 2, or None for regression; "
                f"got {self.num_classes}."
            )

    @property
    def num_features(self) -> int:
        """Number of input features per example."""
        return int(self.x_train.shape[1])

    @property
    def is_classification(self) -> bool:
        """True for classification (``num_classes`` set), False for regression."""
        return self.num_classes is not None

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with all four tensors on ``device`` (no copy if already there)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        task = f"num_classes={self.num_classes}" if self.is_classification else "regression"
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, {task}, device={self.x_train.device})"
        )


def epoch_batches(num_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Minibatch indices into a training set of ``num_examples``, without end, epoch by epoch.

    Each epoch is a fresh permutation of ``range(num_examples)`` drawn from ``generator``
    (``torch.randperm``), cut into ``num_examples // batch_size`` batches of exactly
    ``batch_size`` (int64, on the CPU); the incomplete last batch is skipped, so every batch
    has the same size and BatchNorm never sees a batch of one. The same generator state
    gives the same batches. Used by :func:`normlab.train.train`; chapter ``02_batchnorm``.
    """
    if not 1 <= batch_size <= num_examples:
        raise ValueError(
            f"batch_size must lie between 1 and the number of examples ({num_examples}); got {batch_size}."
        )
    per_epoch = num_examples // batch_size
    while True:
        order = torch.randperm(num_examples, generator=generator)
        for position in range(per_epoch):
            yield order[position * batch_size : (position + 1) * batch_size]


# ----------------------------------------------------------------------------
# helpers


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}.")


def _split_sizes(num_samples: int, test_fraction: float) -> tuple[int, int]:
    """Number of (train, test) examples; both at least one."""
    _check_fraction(test_fraction)
    num_test = int(round(num_samples * test_fraction))
    if num_test < 1 or num_test > num_samples - 1:
        raise ValueError(
            f"test_fraction={test_fraction} of num_samples={num_samples} leaves an empty train or test "
            "split; use more samples or a test_fraction nearer 0.5."
        )
    return num_samples - num_test, num_test


def _make(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None,
) -> Dataset:
    """Build a Dataset from NumPy arrays with the conventional dtypes."""
    y_dtype = torch.int64 if num_classes is not None else torch.float32
    return Dataset(
        name=name,
        x_train=torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.float32),
        y_train=torch.as_tensor(np.ascontiguousarray(y_train), dtype=y_dtype),
        x_test=torch.as_tensor(np.ascontiguousarray(x_test), dtype=torch.float32),
        y_test=torch.as_tensor(np.ascontiguousarray(y_test), dtype=y_dtype),
        num_classes=num_classes,
    )


# ----------------------------------------------------------------------------
# MNIST-1D


def default_cache_dir() -> Path:
    """Where generated datasets are cached: ``$NORMLAB_CACHE`` or ``~/.cache/normlab``."""
    env = os.environ.get("NORMLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "normlab"


def _mnist1d_version() -> str:
    try:
        return importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _generate_mnist1d(seed: int, num_samples: int) -> dict[str, np.ndarray]:
    """Run MNIST-1D's offline generator, restoring Python's and NumPy's global RNGs."""
    try:
        import mnist1d.data  # imported lazily: it pulls in matplotlib
    except ImportError as error:
        raise ImportError(
            "normlab.data.mnist1d needs the mnist1d package; install it with `pip install normlab[data]`."
        ) from error

    args = mnist1d.data.get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        # make_dataset only generates; get_dataset would download with no timeout.
        raw = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {"x": raw["x"], "y": raw["y"], "x_test": raw["x_test"], "y_test": raw["y_test"]}


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays from a cache file, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in ("x", "y", "x_test", "y_test")}
    except (EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None


def mnist1d(seed: int = 42, num_samples: int = 5000, cache_dir: str | Path | None = None) -> Dataset:
    """MNIST-1D (Greydanus, 2020): ten 1-D digit templates, 40 features, 10 classes.

    Generated offline with ``mnist1d.data.make_dataset`` using the reference
    arguments with ``seed`` and ``num_samples`` replaced; the split is the
    generator's own (80% train). Python's ``random`` and NumPy's global RNG are
    restored afterwards. The arrays are cached as ``.npz`` in ``cache_dir``
    (default :func:`default_cache_dir`), written atomically, so later calls load
    them and return identical tensors. No chapter among ``01_why_normalize`` to
    ``09_weight_decay`` uses it (digits train to their ceiling within a CPU budget; see
    :mod:`normlab.experiments.batchnorm`); the chapter on training without normalization
    does (:mod:`normlab.experiments.without_normalization`: μP's coordinate check and
    learning-rate transfer across widths).
    """
    if num_samples < 10 or num_samples % 10:
        raise ValueError(
            f"num_samples must be a positive multiple of 10 (MNIST-1D makes the same number of examples "
            f"of each of its 10 classes); got {num_samples}."
        )
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"mnist1d-{_mnist1d_version()}-seed{seed}-n{num_samples}.npz"
    arrays = _load_cached(path)
    if arrays is None:
        arrays = _generate_mnist1d(seed, num_samples)
        _save_atomically(path, arrays)
    return _make("mnist1d", arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], num_classes=10)


# ----------------------------------------------------------------------------
# scikit-learn's bundled datasets


def digits(seed: int = 0, test_fraction: float = 0.2, standardize: bool = True) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 examples, 64 features, 10 classes).

    Split by a stratified shuffle seeded by ``seed``. With ``standardize``, each
    feature becomes (x - mean_train) / std_train using train statistics only, so
    no information leaks from the test split; constant pixels get std 1.
    Used in chapter ``01_why_normalize``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction(test_fraction)
    bunch = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, stratify=bunch.target, random_state=seed
    )
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0.0] = 1.0
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return _make("digits", x_train, y_train, x_test, y_test, num_classes=10)


def diabetes(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's diabetes regression data (442 patients, 10 features), unscaled.

    Features are the raw measurements (age in years, BMI, blood pressure, serum
    values), whose scales differ by orders of magnitude; the target is disease
    progression after one year, float32 (n,). Shuffled split seeded by ``seed``.
    Used in chapter ``01_why_normalize``, which
    shows why such features slow gradient descent.
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    num_train, _ = _split_sizes(len(bunch.target), test_fraction)
    order = np.random.default_rng(seed).permutation(len(bunch.target))
    train, test = order[:num_train], order[num_train:]
    return _make("diabetes", bunch.data[train], bunch.target[train], bunch.data[test], bunch.target[test], None)


# ----------------------------------------------------------------------------
# synthetic problems


def gaussian_classification(
    num_samples: int = 1000,
    num_features: int = 20,
    num_classes: int = 2,
    separation: float = 2.0,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Class-conditional Gaussians: x = mu_y + standard normal noise.

    Each class mean mu_k is a random direction scaled to norm ``separation``;
    labels are balanced (counts differ by at most one) and shuffled. With
    ``separation=0`` the classes are indistinguishable.
    Used in chapter ``08_initialization`` for quick, controllable experiments.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
    if num_features < 1:
        raise ValueError(f"num_features must be at least 1; got {num_features}.")
    if not (math.isfinite(separation) and separation >= 0):
        raise ValueError(f"separation must be a finite number >= 0; got {separation}.")
    num_train, _ = _split_sizes(num_samples, test_fraction)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((num_classes, num_features))
    means = separation * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    labels = rng.permutation(np.arange(num_samples) % num_classes)
    x = means[labels] + rng.standard_normal((num_samples, num_features))
    return _make(
        "gaussian_classification",
        x[:num_train],
        labels[:num_train],
        x[num_train:],
        labels[num_train:],
        num_classes=num_classes,
    )


def linear_regression(
    num_samples: int = 500,
    num_features: int = 10,
    noise: float = 0.1,
    feature_scales: Sequence[float] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Linear regression y = X w* + noise, with column j of X scaled by feature_scales[j].

    X has standard normal entries before scaling, w* is standard normal, and the
    noise is Gaussian with standard deviation ``noise``. Unequal scales make the
    least-squares Hessian X^T X / n ill-conditioned, with condition number about
    (max scale / min scale)^2.
    Used in chapter ``01_why_normalize``.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be at least 1; got {num_features}.")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0; got {noise}.")
    if feature_scales is None:
        scales = np.ones(num_features)
    else:
        scales = np.asarray(feature_scales, dtype=np.float64)
        if scales.shape != (num_features,):
            raise ValueError(
                f"feature_scales must have one entry per feature ({num_features}); got {scales.size} entries."
            )
        if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
            raise ValueError(f"feature_scales must all be finite and positive; got {scales.tolist()}.")
    num_train, _ = _split_sizes(num_samples, test_fraction)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_samples, num_features)) * scales
    w_star = rng.standard_normal(num_features)
    y = x @ w_star + noise * rng.standard_normal(num_samples)
    return _make("linear_regression", x[:num_train], y[:num_train], x[num_train:], y[num_train:], None)


# ----------------------------------------------------------------------------
# Token sequences (chapter ``11_transformers``)


@dataclass(frozen=True, eq=False, repr=False)
class SortingTask:
    """Sort ``length`` tokens from ``range(vocab)``, as next-token prediction (minGPT's sorting demo).

    Each row of ``inputs`` is ``x₁ … x_T s₁ … s_{T−1}`` and the same row of ``targets`` is
    ``x₂ … x_T s₁ … s_T``, where s = sorted(x): a causal model reads the unsorted tokens and
    then writes the sorted ones one at a time. Only positions ``start = T − 1`` onwards (those
    whose target is a sorted token) count in the loss and the accuracy. int64 tensors of
    shape (n, 2T − 1). Chapter ``11_transformers``.
    """

    inputs_train: torch.Tensor
    targets_train: torch.Tensor
    inputs_test: torch.Tensor
    targets_test: torch.Tensor
    vocab: int
    length: int

    @property
    def start(self) -> int:
        """The first position whose target is a sorted token (T − 1)."""
        return self.length - 1

    @property
    def sequence_length(self) -> int:
        """2T − 1, the length of each input row."""
        return 2 * self.length - 1

    def __repr__(self) -> str:
        return (f"SortingTask(vocab={self.vocab}, length={self.length}, train={len(self.inputs_train)}, "
                f"test={len(self.inputs_test)})")


def sorting_task(num_train: int = 4000, num_test: int = 500, length: int = 8, vocab: int = 8,
                 seed: int = 0) -> SortingTask:
    """Random sequences of ``length`` tokens drawn uniformly from ``range(vocab)`` and their sorted versions.

    Train and test sequences come from one ``numpy.random.default_rng(seed)``; with
    vocab^length possible sequences (8⁸ ≈ 1.7·10⁷ by default) the test set is, up to a handful of
    duplicates, unseen. See :class:`SortingTask` for the layout.
    Chapter ``11_transformers``.
    """
    if length < 2 or vocab < 2:
        raise ValueError(f"length and vocab must be at least 2; got length={length}, vocab={vocab}.")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be at least 1; got {num_train} and {num_test}.")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(num_train + num_test, length))
    full = np.concatenate([x, np.sort(x, axis=1)], axis=1)
    inputs = torch.as_tensor(full[:, :-1], dtype=torch.int64)
    targets = torch.as_tensor(full[:, 1:], dtype=torch.int64)
    return SortingTask(inputs[:num_train], targets[:num_train], inputs[num_train:], targets[num_train:],
                       vocab=vocab, length=length)


__all__ += ["SortingTask", "sorting_task"]


def delayed_copy(num_sequences: int, length: int, delay: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t ~ N(0, 1) of shape (num_sequences, length, 1); the target is y_t = x_{t−delay} (0 before).

    Used in chapter ``07_layernorm``.
    """
    x = torch.randn(num_sequences, length, 1, generator=generator)
    y = torch.zeros_like(x)
    y[:, delay:] = x[:, :-delay]
    return x, y
