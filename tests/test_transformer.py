"""normlab.transformer.Transformer and normlab.data.sorting_task: shapes, seeding, causality, the
normalizer and its position as asked, QK-norm's bound on the logits, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normlab.data import sorting_task
from normlab.layers import DynamicTanh, LayerNorm, RMSNorm
from normlab.transformer import Transformer, sequence_loss


def test_sorting_task_is_seeded_and_sorted():
    a, b = sorting_task(num_train=50, num_test=10, seed=3), sorting_task(num_train=50, num_test=10, seed=3)
    assert torch.equal(a.inputs_train, b.inputs_train) and a.inputs_train.shape == (50, 15)
    full = torch.cat([a.inputs_train[:, :1], a.targets_train], dim=1)
    assert torch.equal(full[:, 8:], full[:, :8].sort(dim=1).values)
    assert torch.equal(a.inputs_train[:, 1:], a.targets_train[:, :-1])
    with pytest.raises(ValueError, match="length and vocab"):
        sorting_task(length=1)


@pytest.mark.parametrize("normalizer, cls", [("layernorm", LayerNorm), ("rmsnorm", RMSNorm), ("dyt", DynamicTanh)])
@pytest.mark.parametrize("position", ["pre", "post", "deepnorm"])
def test_transformer_uses_the_normalizer_asked_for(normalizer, cls, position):
    model = Transformer(vocab=8, length=15, depth=2, normalizer=normalizer, position=position)
    norms = [m for m in model.modules() if isinstance(m, cls)]
    assert len(norms) == 4 + (position == "pre")        # two per block, plus pre-LN's final one
    assert model(torch.zeros(3, 15, dtype=torch.long)).shape == (3, 15, 8)


def test_transformer_is_seeded_and_causal():
    a, b = Transformer(8, 15, seed=1), Transformer(8, 15, seed=1)
    tokens = torch.randint(0, 8, (2, 15), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a(tokens), b(tokens), rtol=0, atol=0)
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 8
    out, out2 = a(tokens), a(changed)
    torch.testing.assert_close(out[:, :10], out2[:, :10])      # earlier positions cannot see position 10
    assert not torch.allclose(out[:, 10:], out2[:, 10:])


def _with_large_query_key_weights(qk_norm: bool) -> float:
    model = Transformer(8, 15, depth=2, width=32, heads=2, qk_norm=qk_norm, init="xavier")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:64].mul_(30.0)                # W_q and W_k grown 30-fold, as in training
        model(torch.randint(0, 8, (4, 15)))
    return model.max_attention_logit


def test_qk_norm_bounds_the_attention_logits_by_sqrt_head_dim():
    assert _with_large_query_key_weights(True) <= math.sqrt(16) + 1e-5   # |q̂·k̂|/√d ≤ √d with γ = 1
    assert _with_large_query_key_weights(False) > 100


def test_deepnorm_scales_the_residual_and_the_branches():
    model = Transformer(8, 15, depth=6, position="deepnorm", init="xavier")
    assert model.blocks[0].residual_alpha == pytest.approx(12 ** 0.25)
    plain = Transformer(8, 15, depth=6, position="post", init="xavier")
    ratio = (model.blocks[0].ffn[2].weight.std() / plain.blocks[0].ffn[2].weight.std()).item()
    assert ratio == pytest.approx(48 ** -0.25, rel=1e-6)


def test_trace_sums_to_the_stream():
    model = Transformer(8, 15, depth=3, init="xavier")
    tokens = torch.randint(0, 8, (2, 15))
    skips, branches = model.trace(tokens)
    assert len(skips) == 6
    for b in range(5):
        torch.testing.assert_close(skips[b + 1], skips[b] + branches[b])


def test_sequence_loss_counts_only_the_sorted_half():
    task = sorting_task(num_train=8, num_test=2)
    logits = torch.zeros(8, 15, 8)
    assert float(sequence_loss(logits, task.targets_train, task.start)) == pytest.approx(math.log(8))


@pytest.mark.parametrize("kwargs, match", [
    ({"normalizer": "batchnorm"}, "normalizer must be one of"),
    ({"position": "middle"}, "position must be one of"),
    ({"width": 30, "heads": 4}, "divisible by heads"),
    ({"position": "post", "normalizer": "none"}, "position='pre'"),
    ({"init": "he"}, "init must be one of"),
])
def test_transformer_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Transformer(8, 15, **kwargs)


def test_transformer_refuses_bad_tokens():
    model = Transformer(8, 15)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.zeros(2, 16, dtype=torch.long))
