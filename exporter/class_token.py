"""The last transformer block computed for the tokens the classifier reads, not for all of them.

Why: a ViT that classifies from its class token throws away every other token's output of the
last block. That block's key and value projections need every token, but its query projection,
attention weights, output projection, LayerNorms and MLP are per token: computed for the class
token alone they give the same logits (the same operations on the same values) for 6.9% less
of ViT-B's Linear work (the last of 12 blocks computes 1,536 of its 9,216 weight columns for
every token, the other 7,680 for one). benchmarks/class_token.py times each export both ways;
on a 2-core AVX2 EPYC (batch 1, 2 threads, medians of five interleaved rounds) trimmed over
whole was 1.07× for ONNX int8-dynamic and int8-static, 1.06× for fp32, 1.03× for OpenVINO int8;
how much of the removed work shows as time depends on the CPU and runtime. The final LayerNorm
is per token and the pool reads token 0 (DeiT-distilled: tokens 0 and 1) of what is left, so
nothing after the block changes. An int8-dynamic export
scales the trimmed block's activations over the kept tokens alone, so its int8 values differ
from the untrimmed graph's; parity against the PyTorch model is checked as for any export.

Which models: timm `VisionTransformer` / `VisionTransformerDistilled` with token pooling and no
attention pool whose last block is timm's plain `Block` around a plain `Attention`; transformers'
`ViTForImageClassification`, `DeiTForImageClassification` and `DeiTForImageClassificationWithTeacher`
whose last layer's attention has plain q/k/v/o Linears (the tests of exporter/ort_attention.py).
Anything else (average pooling, EVA, BEiT, DINOv2, token merging's blocks, Nyström attention)
exports whole. The export records whether the trimmed forward actually ran.

Which formats (FORMATS): all of them. While the trim is on, timm's packed qkv becomes two
Linears of the block (its query rows, its key and value rows: `_rows_of`), and the keys and
values are sliced out of the second's output. Written otherwise, ExecuTorch's XNNPACK program
suffered: with k/v split by chunk() it lost its dynamic batch (the example's 2), and with the
weight sliced inside the graph that product fell out of the delegate to a portable addmm (the
fp32 program ran 0.27× the untrimmed one on vit_base, AVX2 EPYC).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

FORMATS = ("onnx", "openvino", "executorch")
# timm's packed qkv as two Linears of the block while the trim is on (registered on it, so
# exporters see their weights as the model's parameters; removed afterwards)
TIMM_PARTS = ("class_token_q", "class_token_kv")
HF_KEEP = {
    "ViTForImageClassification": 1,
    "DeiTForImageClassification": 1,
    "DeiTForImageClassificationWithTeacher": 2,
}


@dataclass
class Trim:
    """What `class_token_only` did: the tokens kept, and whether a trimmed forward ran."""

    keep: int = 0
    ran: bool = False


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v over heads for q of the kept tokens [B, keep, W] against k, v of
    every token [B, N, W]; returns [B, keep, W]."""
    batch, keep, width = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:  # [B, T, W] → [B, heads, T, W / heads]
        return t.reshape(batch, t.shape[1], heads, width // heads).transpose(1, 2)

    scores = (split(q) * scale) @ split(k).transpose(-2, -1)
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(batch, keep, width)


def _rows_of(linear: nn.Linear, start: int, stop: int) -> nn.Linear:
    """Output rows start:stop of `linear` as a Linear of its own, its weight a parameter rather
    than a slice computed in the graph: XNNPACK delegates a linear only when its weight is a
    constant (module docstring)."""
    weight = linear.weight
    part = nn.Linear(weight.shape[1], stop - start, linear.bias is not None, weight.device, weight.dtype)
    with torch.no_grad():
        part.weight.copy_(weight[start:stop])
        if linear.bias is not None:
            part.bias.copy_(linear.bias[start:stop])
    return part.requires_grad_(False)


def _timm_forward(block: nn.Module, keep: int, trim: Trim) -> tuple[Callable[..., Any], dict[str, nn.Module]]:
    original, attn = block.forward, block.attn
    width = attn.num_heads * attn.head_dim
    parts = dict(zip(TIMM_PARTS, (_rows_of(attn.qkv, 0, width), _rows_of(attn.qkv, width, 3 * width)), strict=True))
    q, kv = parts.values()

    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return original(x, attn_mask=attn_mask, is_causal=is_causal)
        trim.ran = True
        y = block.norm1(x)
        k_and_v = kv(y)
        k, v = k_and_v[..., :width], k_and_v[..., width:]  # slices, not chunk(): see the module docstring
        mixed = attn.proj(prefix_attention(q(y[:, :keep]), k, v, attn.num_heads, float(attn.scale)))
        x = x[:, :keep] + block.drop_path1(block.ls1(mixed))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    return forward, parts


def _hf_forward(layer: nn.Module, keep: int, trim: Trim) -> tuple[Callable[..., Any], dict[str, nn.Module]]:
    original, attn = layer.forward, layer.attention

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if attention_mask is not None:
            return original(hidden_states, attention_mask, **kwargs)
        trim.ran = True
        y = layer.layernorm_before(hidden_states)
        mixed = prefix_attention(
            attn.q_proj(y[:, :keep]), attn.k_proj(y), attn.v_proj(y), attn.num_attention_heads, float(attn.scaling)
        )
        x = hidden_states[:, :keep] + layer.dropout(attn.o_proj(mixed))
        return x + layer.dropout(layer.mlp(layer.layernorm_after(x)))

    return forward, {}


def _timm_last(model: nn.Module) -> tuple[nn.Module, int, Callable[..., Any]] | None:
    from timm.models.vision_transformer import Block, VisionTransformer

    from .ort_attention import _timm_plain

    if not isinstance(model, VisionTransformer) or getattr(model, "global_pool", None) != "token":
        return None
    if getattr(model, "attn_pool", None) is not None or len(model.blocks) == 0:
        return None
    last = model.blocks[-1]
    if type(last) is not Block or not _timm_plain(last.attn):
        return None
    return last, 2 if type(model).__name__ == "VisionTransformerDistilled" else 1, _timm_forward


def _hf_last(model: nn.Module) -> tuple[nn.Module, int, Callable[..., Any]] | None:
    from ..models.families import HFImageClassifier
    from .ort_attention import _hf_plain

    if not isinstance(model, HFImageClassifier) or type(model.model).__name__ not in HF_KEEP:
        return None
    backbone = getattr(model.model, "vit", None) or getattr(model.model, "deit", None)
    layers = getattr(backbone, "layers", None) or getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers:
        return None
    last = layers[-1]
    names = ("layernorm_before", "layernorm_after", "mlp", "dropout", "attention")
    if not all(hasattr(last, name) for name in names) or not _hf_plain(last.attention):
        return None
    return last, HF_KEEP[type(model.model).__name__], _hf_forward


def trimmed(model: nn.Module, enabled: bool, to: str) -> contextlib.AbstractContextManager[Trim]:
    """`class_token_only(model)` when `enabled` (ExportOptions.class_token_only) and format `to`
    is one of FORMATS, else the model whole: every path that turns the module into a graph goes
    through here, so an evaluated graph is the graph that is written."""
    return class_token_only(model) if enabled and to in FORMATS else contextlib.nullcontext(Trim())


@contextlib.contextmanager
def class_token_only(model: nn.Module) -> Iterator[Trim]:
    """While the block runs, the model's last block returns only the tokens its classifier
    reads, where that is exact (see the module docstring); the original forward comes back
    afterwards. The yielded `Trim` says how many tokens are kept and whether the trimmed forward
    ran (keep 0: this model is exported whole)."""
    found = _timm_last(model) or _hf_last(model)
    if found is None:
        yield Trim()
        return
    block, keep, build = found
    trim = Trim(keep=keep)
    block.forward, parts = build(block, keep, trim)
    for name, part in parts.items():
        block.add_module(name, part)
    try:
        yield trim
    finally:
        del block.forward  # the instance attribute; the class's forward shows through again
        for name in parts:
            delattr(block, name)
