"""Normalization layers as torch modules, drop-in compatible with ``torch.nn``.

- :class:`BatchNorm1d`, :class:`BatchNorm2d`: batch normalization with the analytic
  backward of :class:`BatchNormFunction`.
"""

from normlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNormFunction

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormFunction"]
