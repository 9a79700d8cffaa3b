"""A small decoder-only (causal) Transformer whose normalization can be swapped and moved.

Built from ``torch.nn`` primitives (``nn.Embedding``, ``nn.Linear``), not ``nn.Transformer*`` or
``nn.MultiheadAttention``, so every line of the equations below is visible. One block, with
``Norm`` the chosen normalizer ("layernorm", "rmsnorm", "dyt" or "none") and ``Attn``, ``FFN`` its
two sublayers:

    pre-LN   (Xiong et al. 2020):  x ← x + Attn(Norm(x));   x ← x + FFN(Norm(x))            (1)
             and one more Norm before the output head
    post-LN  (Vaswani et al. 2017): x ← Norm(x + Attn(x));   x ← Norm(x + FFN(x))           (2)
    DeepNorm (Wang et al. 2022):   x ← Norm(α·x + Attn(x));  x ← Norm(α·x + FFN(x)),        (3)
             α = (2L)^(1/4), and the value, output and FFN weights initialized × β = (8L)^(-1/4)

    Attn(x) = softmax(Q Kᵀ/√d_h + causal mask) V,  Q, K, V = x W_q, x W_k, x W_v per head    (4)
    with QK-norm (Dehghani et al. 2023): Q, K ← LN(Q), LN(K) per head, before the product    (5)
    FFN(x)  = W_2 ReLU(W_1 x),  4× wider inside                                             (6)

Inputs are token ids (batch, T); the output is logits (batch, T, vocab). The model records the
largest attention logit of its last forward pass (``max_attention_logit``), the quantity whose
growth QK-norm prevents.

Chapter ``11_transformers``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.layers import DynamicTanh, LayerNorm, RMSNorm

__all__ = ["INITS", "NORMALIZERS", "POSITIONS", "Transformer", "make_norm"]

NORMALIZERS = ("layernorm", "rmsnorm", "dyt", "none")
INITS = ("gpt2", "xavier")
POSITIONS = ("pre", "post", "deepnorm")


def make_norm(normalizer: str, width: int, dyt_alpha: float = 0.5) -> nn.Module:
    """The normalization layer ``normalizer`` over the last dimension of size ``width``.

    "layernorm" and "rmsnorm" are normlab's drop-ins for torch's (RMSNorm with torch's default
    ε); "dyt" is :class:`normlab.layers.DynamicTanh` with α₀ = ``dyt_alpha``; "none" the identity.
    Chapter ``11_transformers``.
    """
    if normalizer == "layernorm":
        return LayerNorm(width)
    if normalizer == "rmsnorm":
        return RMSNorm(width)
    if normalizer == "dyt":
        return DynamicTanh(width, alpha_init=dyt_alpha)
    if normalizer == "none":
        return nn.Identity()
    raise ValueError(f"normalizer must be one of {list(NORMALIZERS)}; got {normalizer!r}.")


class Attention(nn.Module):
    """Causal multi-head self-attention, equation (4), with optional QK-norm, equation (5)."""

    def __init__(self, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.q_norm = LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = LayerNorm(self.head_dim) if qk_norm else None
        self.max_logit = math.nan

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (4)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (5)
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        self.max_logit = float(logits.detach().masked_fill(mask, -math.inf).amax())
        attention = torch.softmax(logits.masked_fill(mask, -math.inf), dim=-1)
        return self.out((attention @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """One Transformer block: attention then FFN (6), each wrapped as in (1), (2) or (3)."""

    def __init__(self, width: int, heads: int, normalizer: str, position: str, qk_norm: bool,
                 residual_alpha: float, dyt_alpha: float) -> None:
        super().__init__()
        self.position, self.residual_alpha = position, residual_alpha
        self.norm1 = make_norm(normalizer, width, dyt_alpha)
        self.attn = Attention(width, heads, qk_norm)
        self.norm2 = make_norm(normalizer, width, dyt_alpha)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))  # (6)

    def forward(self, x: Tensor) -> Tensor:
        if self.position == "pre":
            x = x + self.attn(self.norm1(x))  # (1)
            return x + self.ffn(self.norm2(x))
        a = self.residual_alpha  # 1 for post-LN (2), (2L)^(1/4) for DeepNorm (3)
        x = self.norm1(a * x + self.attn(x))
        return self.norm2(a * x + self.ffn(x))


class Transformer(nn.Module):
    """A decoder-only Transformer: token and learned position embeddings, ``depth`` blocks, a linear head.

    ``normalizer`` ∈ {"layernorm", "rmsnorm", "dyt", "none"}; ``position`` ∈ {"pre", "post",
    "deepnorm"}: equations (1)–(3) of the module docstring; ``qk_norm`` adds LayerNorm on the
    queries and keys of each head, equation (5). Weights are drawn from ``torch.Generator``
    seeded by ``seed`` (N(0, 0.02²) for embeddings and linear layers, biases 0, as GPT-2), so the
    same arguments give the same network (``init="gpt2"``, the default). ``dyt_alpha`` is DyT's α₀. After each forward pass
    :attr:`max_attention_logit` is the largest pre-softmax attention logit over all layers,
    heads and unmasked positions. ``init="xavier"`` draws linear weights from Glorot's normal
    (Var = 2/(fan_in + fan_out)) and embeddings from N(0, 1), the setting of Xiong et al.'s analysis.

    >>> model = Transformer(vocab=10, length=16, depth=2, width=32, heads=2)
    >>> model(torch.zeros(4, 16, dtype=torch.long)).shape
    torch.Size([4, 16, 10])

    Chapter ``11_transformers``.
    """

    def __init__(self, vocab: int, length: int, depth: int = 2, width: int = 32, heads: int = 2,
                 normalizer: str = "layernorm", position: str = "pre", qk_norm: bool = False,
                 dyt_alpha: float = 0.5, init: str = "gpt2", seed: int = 0) -> None:
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {list(NORMALIZERS)}; got {normalizer!r}.")
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {list(POSITIONS)}; got {position!r}.")
        if min(vocab, length, depth, width, heads) < 1:
            raise ValueError(f"vocab, length, depth, width and heads must be >= 1; got "
                             f"{vocab}, {length}, {depth}, {width}, {heads}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}; got {init!r}.")
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads} (each head gets width/heads).")
        if position != "pre" and normalizer == "none":
            raise ValueError("post-LN and DeepNorm normalize the residual stream itself; with normalizer='none' "
                             "use position='pre' (no normalization anywhere).")
        self.vocab, self.length, self.depth, self.width = vocab, length, depth, width
        self.normalizer, self.position, self.qk_norm = normalizer, position, qk_norm
        alpha = (2 * depth) ** 0.25 if position == "deepnorm" else 1.0
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(length, width)
        self.blocks = nn.ModuleList(Block(width, heads, normalizer, position, qk_norm, alpha, dyt_alpha)
                                    for _ in range(depth))
        self.final_norm = make_norm(normalizer, width, dyt_alpha) if position == "pre" else nn.Identity()
        self.head = nn.Linear(width, vocab)
        self._initialize(seed, init)

    def _initialize(self, seed: int, init: str) -> None:
        generator = torch.Generator().manual_seed(seed)
        beta = (8 * self.depth) ** -0.25 if self.position == "deepnorm" else 1.0
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    std = 0.02
                    if init == "xavier":  # Glorot: Var = 2/(fan_in + fan_out); embeddings N(0, 1)
                        std = math.sqrt(2.0 / sum(module.weight.shape)) if isinstance(module, nn.Linear) else 1.0
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                    if isinstance(module, nn.Linear):
                        module.bias.zero_()
                    if beta != 1.0 and (name.endswith(("attn.out", "ffn.0", "ffn.2"))):
                        module.weight.mul_(beta)  # DeepNorm's β on W_v, W_o and the FFN, (3)
                    if beta != 1.0 and name.endswith("attn.qkv"):
                        module.weight[2 * self.width:].mul_(beta)  # the W_v third of the fused projection

    @property
    def max_attention_logit(self) -> float:
        """The largest attention logit of the last forward pass, over every layer and head."""
        return max(block.attn.max_logit for block in self.blocks)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"Transformer expects token ids of shape (batch, T) and dtype int64; got "
                             f"{tuple(tokens.shape)} {tokens.dtype}.")
        t = tokens.shape[1]
        if t > self.length:
            raise ValueError(f"sequence length {t} exceeds the model's length={self.length}.")
        x = self.tokens(tokens) + self.positions(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    def trace(self, tokens: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The two terms each sublayer adds, without gradient: (skips, branches), 2·depth tensors each.

        For sublayer b the residual sum is ``skips[b] + branches[b]``: x and Attn(Norm(x)) for
        pre-LN (1); α·x and Attn(x) for post-LN (α = 1) and DeepNorm (2)–(3), before their Norm.
        """
        skips, branches = [], []
        with torch.no_grad():
            x = self.tokens(tokens) + self.positions(torch.arange(tokens.shape[1], device=tokens.device))
            for block in self.blocks:
                for norm, sublayer in ((block.norm1, block.attn), (block.norm2, block.ffn)):
                    if self.position == "pre":
                        skip, branch = x, sublayer(norm(x))
                        x = skip + branch
                    else:
                        skip, branch = block.residual_alpha * x, sublayer(x)
                        x = norm(skip + branch)
                    skips.append(skip)
                    branches.append(branch)
        return skips, branches


def sequence_loss(logits: Tensor, targets: Tensor, start: int) -> Tensor:
    """Mean cross-entropy of ``logits[:, start:]`` (batch, T, vocab) against ``targets[:, start:]``.

    Chapter ``11_transformers``.
    """
    return F.cross_entropy(logits[:, start:].reshape(-1, logits.shape[-1]), targets[:, start:].reshape(-1))
