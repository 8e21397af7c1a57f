"""ViT self-attention written as one ONNX Runtime `com.microsoft.Attention` node per block.

Why: ONNX Runtime's dynamic int8 turns an `Attention` node into `QAttention`, which runs the
q/k/v projection as one int8 GEMM and the whole attention (scores, softmax, weighted sum) in
one kernel, where the plain graph runs a float MatMul pair, Transposes, Split, Squeeze and a
Softmax per block. ORT's own fusions do not find timm's packed-qkv attention (FIELD-NOTES),
so the exporter writes the node itself: the attention module's forward is swapped, for the
export only, for a function whose ONNX symbolic is that node.

Measured on vit_base_patch16_224 (random weights, batch 1, 2 threads, ORT 1.32, AVX512-VNNI
Xeon without AMX): dynamic int8 with the node 14.3-16.2 it/s against 12.4-13.6 without, in
interleaved runs (and leaving the patch-embedding Conv float, see exporter/export.py). In
fp32 the node ran slower than the plain graph (4.5 against 5.7 it/s), so only the int8-dynamic
export uses it. On a Zen 5 EPYC (AVX512-VNNI) the alternatives ran slower in int8-dynamic
(vit_base_patch16_224, batch 1, 2 threads, interleaved processes): the attention products
quantized too (74 DynamicQuantizeMatMul) 0.89×, `MultiHeadAttention` on separate q, k, v (ORT's
CPU flash attention) 0.99×. The node is a contrib operator: the artifact then runs on ONNX Runtime only
(OpenVINO and other ONNX readers do not know it), and its manifest says so.

Which modules: timm's plain `Attention` (ViT, DeiT) with no q/k norm, scale norm or gate, and
transformers' ViT/DeiT/Dinov2 attention with separate q/k/v Linears (their weights are
concatenated into the node's packed weight). Every other attention (EVA's RoPE, BEiT's relative
position bias, Nyström, token merging's own block) exports as before; the export counts the
nodes actually written, not the modules swapped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

DOMAIN = "com.microsoft"
OPSET = {DOMAIN: 1}
HF_ATTENTIONS = ("ViTAttention", "DeiTAttention", "Dinov2Attention")


class PackedAttention(torch.autograd.Function):
    """softmax(q·kᵀ·scale)·v over heads, from x·W + b with W packed as [q | k | v]; exported as
    ORT's Attention node, computed here with the modules' own math so tracing sees real values."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, heads: int, scale: float
    ) -> torch.Tensor:  # noqa: ARG004
        batch, tokens, _ = x.shape
        q, k, v = (x @ weight + bias).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * scale) @ k.transpose(-2, -1)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, -1)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, heads: int, scale: float) -> Any:
        node = g.op(f"{DOMAIN}::Attention", x, weight, bias, num_heads_i=heads, scale_f=scale)
        batch, tokens, _ = x.type().varyingSizes()
        width = weight.type().varyingSizes()[1] // 3
        node.setType(x.type().with_sizes([batch, tokens, width]))  # the tracer cannot infer a contrib op's shape
        return node


def _packed_bias(linears: list[nn.Linear]) -> torch.Tensor:
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears])


def _timm_forward(module: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return original(x, attn_mask=attn_mask, is_causal=is_causal)
        qkv = module.qkv
        packed = PackedAttention.apply(x, qkv.weight.t(), _packed_bias([qkv]), module.num_heads, float(module.scale))
        return module.proj(packed)

    return forward


def _hf_forward(module: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if attention_mask is not None:
            return original(hidden_states, attention_mask, **kwargs)
        linears = [module.q_proj, module.k_proj, module.v_proj]
        weight = torch.cat([lin.weight for lin in linears]).t()
        heads = module.num_attention_heads
        packed = PackedAttention.apply(hidden_states, weight, _packed_bias(linears), heads, float(module.scaling))
        return module.o_proj(packed), None

    return forward


def _timm_plain(module: nn.Module) -> bool:
    from timm.models.vision_transformer import Attention

    return (
        type(module) is Attention
        and type(module.qkv) is nn.Linear
        and all(isinstance(getattr(module, name, nn.Identity()), nn.Identity) for name in ("q_norm", "k_norm", "norm"))
        and getattr(module, "gate", None) is None
        and module.qkv.out_features == 3 * module.num_heads * module.head_dim
    )


def _hf_plain(module: nn.Module) -> bool:
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    return (
        type(module).__name__ in HF_ATTENTIONS
        and all(type(getattr(module, name, None)) is nn.Linear for name in names)
        and not getattr(module, "is_causal", False)
    )


def fusable(module: nn.Module) -> Callable[[nn.Module, Callable[..., Any]], Callable[..., Any]] | None:
    """The forward builder for an attention module this export can write as one node, else None."""
    if _timm_plain(module):
        return _timm_forward
    if _hf_plain(module):
        return _hf_forward
    return None


@contextlib.contextmanager
def ort_attention(model: nn.Module) -> Iterator[int]:
    """Every fusable attention of `model` swapped to `PackedAttention` while the block runs
    (yields how many were swapped); the original forwards come back afterwards."""
    swapped = []
    for module in model.modules():
        build = fusable(module)
        if build is not None:
            swapped.append(module)
            module.forward = build(module, module.forward)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward  # the instance attribute; the class's forward shows through again
