"""Shared test settings.

Small models train many times faster with one intra-op thread than with two on this
2-core machine, and pytest-xdist already runs two workers.
"""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("NORMLAB_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "normlab"))
