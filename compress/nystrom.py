"""Nyströmformer attention (Xiong et al. 2021) as a drop-in for the attention of a trained
model: the same q/k/v and projection weights, so the state dict is unchanged and only the
attention math differs. Three families: timm's VisionTransformer (Attention), timm's Eva
(EvaAttention, with its rotary embeddings applied to q and k before the landmarks are taken,
so each token keeps its position) and transformers ViT/DeiT (separate q/k/v projections).

softmax(QKᵀ)V ≈ softmax(Q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · (softmax(Q̃ Kᵀ) V), with m landmarks
Q̃, K̃ the means of m contiguous token segments. When N is not a multiple of m the segments are
ragged (lengths differ by at most one) instead of padding, so no fake tokens enter the means.
The pseudo-inverse is the paper's 6-iteration Newton–Schulz-style scheme, with its initial
scale taken per matrix (not over the whole batch as in the reference code) so each image's
output does not depend on the others in its batch. With m ≥ N it falls back to exact attention.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import VitedgeError
from ..models import FAMILIES
from .step import Step, StepRecord, StepResult, clone, family_blocks, record, require_family

FAMILIES_SUPPORTED = ("timm-vit", "timm-eva", "hf-vit")


@lru_cache(maxsize=64)
def segment_means(tokens: int, landmarks: int) -> torch.Tensor:
    """An m×N matrix whose row i averages the i-th of m contiguous, near-equal segments
    (cached: built once per shape, a constant in traced exports; never modified). Built
    outside inference mode even when first asked for inside it (a measurement), since the
    cached tensor would otherwise fail every later training step of that shape."""
    bounds = [(i * tokens) // landmarks for i in range(landmarks + 1)]
    rows = [
        [1.0 / (bounds[i + 1] - bounds[i]) if bounds[i] <= t < bounds[i + 1] else 0.0 for t in range(tokens)]
        for i in range(landmarks)
    ]
    with torch.inference_mode(False):
        return torch.tensor(rows)


def iterative_pinv(matrix: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore–Penrose pseudo-inverse of a batch of m×m matrices by Nyströmformer's iteration."""
    identity = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    scale = matrix.abs().sum(-2).amax(-1, keepdim=True) * matrix.abs().sum(-1).amax(-1, keepdim=True)
    inverse = matrix.transpose(-1, -2) / scale[..., None]
    for _ in range(iterations):
        product = matrix @ inverse
        inverse = (0.25 * inverse) @ (13 * identity - product @ (15 * identity - product @ (7 * identity - product)))
    return inverse


def nystrom_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, landmarks: int, iterations: int, drop: nn.Module
) -> torch.Tensor:
    """softmax(q kᵀ) v by Nyström's approximation, B×H×N×D each, q already scaled; exact when
    there are no more tokens than landmarks."""
    tokens = int(q.shape[-2])
    if landmarks >= tokens:
        return drop((q @ k.transpose(-2, -1)).softmax(-1)) @ v
    means = segment_means(tokens, landmarks).to(q.dtype)
    q_landmarks, k_landmarks = means @ q, means @ k
    kernel_1 = (q @ k_landmarks.transpose(-2, -1)).softmax(-1)
    kernel_2 = (q_landmarks @ k_landmarks.transpose(-2, -1)).softmax(-1)
    kernel_3 = drop((q_landmarks @ k.transpose(-2, -1)).softmax(-1))
    return (kernel_1 @ iterative_pinv(kernel_2, iterations)) @ (kernel_3 @ v)


class NystromAttention(nn.Module):
    """timm Attention's submodules and weights, Nyström attention math."""

    def __init__(self, attention: nn.Module, landmarks: int, iterations: int = 6) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim, self.scale = (
            attention.num_heads,
            attention.head_dim,
            attention.attn_dim,
            attention.scale,
        )
        self.qkv, self.q_norm, self.k_norm = attention.qkv, attention.q_norm, attention.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = (
            attention.attn_drop,
            attention.norm,
            attention.proj,
            attention.proj_drop,
        )
        self.gate = getattr(attention, "gate", None)
        self.landmarks, self.iterations = landmarks, iterations

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("Nyström attention does not support attention masks")
        batch, tokens, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q) * self.scale, self.k_norm(k)
        out = nystrom_attention(q, k, v, self.landmarks, self.iterations, self.attn_drop)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


@lru_cache(maxsize=1)
def _eva_attention_class() -> type:
    from timm.models.eva import EvaAttention, apply_rot_embed_cat

    class NystromEvaAttention(EvaAttention):
        """timm EvaAttention itself (parameters, buffers, state-dict keys: the instance's class is
        swapped), with Nyström math after q/k/v and the rotary embedding are computed as Eva does."""

        landmarks: int
        iterations: int

        def forward(
            self,
            x: torch.Tensor,
            rope: torch.Tensor | None = None,
            attn_mask: torch.Tensor | None = None,
            is_causal: bool = False,
        ) -> torch.Tensor:
            if attn_mask is not None or is_causal:
                raise ValueError("Nyström attention does not support attention masks")
            batch, tokens, _ = x.shape
            gate = self.gate(x).sigmoid() if self.gate is not None else None
            if self.qkv is not None:
                if self.q_bias is None:
                    qkv = self.qkv(x)
                elif self.qkv_bias_separate:
                    qkv = self.qkv(x) + torch.cat((self.q_bias, self.k_bias, self.v_bias))
                else:
                    qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
                q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            else:
                q, k, v = (
                    proj(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
                    for proj in (self.q_proj, self.k_proj, self.v_proj)
                )
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                npt, half = self.num_prefix_tokens, getattr(self, "rotate_half", False)
                q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(v)
                k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(v)
            out = nystrom_attention(q * self.scale, k, v, self.landmarks, self.iterations, self.attn_drop)
            out = self.norm(out.transpose(1, 2).reshape(batch, tokens, -1))
            if gate is not None:
                out = out * gate
            return self.proj_drop(self.proj(out))

    return NystromEvaAttention


class NystromHFAttention(nn.Module):
    """A transformers ViT/DeiT attention's q/k/v/o projections (same names, same state-dict
    keys), Nyström math; returns (output, None) as the layer it sits in expects."""

    def __init__(self, attention: nn.Module, landmarks: int, iterations: int = 6) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            attention.q_proj,
            attention.k_proj,
            attention.v_proj,
            attention.o_proj,
        )
        self.head_dim, self.scaling = int(attention.head_dim), float(attention.scaling)
        self.num_attention_heads = int(attention.q_proj.out_features // attention.head_dim)
        self.attn_drop = nn.Dropout(float(attention.attention_dropout))
        self.landmarks, self.iterations = landmarks, iterations

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, None]:
        if attention_mask is not None:
            raise ValueError("Nyström attention does not support attention masks")
        batch, tokens, _ = hidden_states.shape
        q, k, v = (
            proj(hidden_states).view(batch, tokens, -1, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = nystrom_attention(q * self.scaling, k, v, self.landmarks, self.iterations, self.attn_drop)
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1)), None


def has_hf_projections(attention: nn.Module) -> bool:
    """transformers' ViT/DeiT attention since the q_proj/k_proj/v_proj/o_proj layout (5.x)."""
    return all(type(getattr(attention, name, None)) is nn.Linear for name in ("q_proj", "k_proj", "v_proj", "o_proj"))


def _swap(model: nn.Module, landmarks: int, iterations: int) -> nn.Module:
    from timm.models.eva import EvaAttention
    from timm.models.vision_transformer import Attention

    from .tokens import TokenReductionBlocks

    family = require_family("nystrom", model, FAMILIES_SUPPORTED)
    blocks = family_blocks(model, "nystrom")
    if isinstance(blocks, TokenReductionBlocks):
        raise VitedgeError(
            "nystrom cannot follow tokens (token merging computes its own attention)",
            "apply nystrom first, or drop one of them",
        )
    for block in blocks:
        attention = block.attention if family == "hf-vit" else block.attn
        if family == "timm-vit" and isinstance(attention, Attention):
            block.attn = NystromAttention(attention, landmarks, iterations)
        elif family == "timm-eva" and type(attention) is EvaAttention:
            attention.__class__ = _eva_attention_class()
            attention.landmarks, attention.iterations = landmarks, iterations
        elif family == "hf-vit" and has_hf_projections(attention) and not isinstance(attention, NystromHFAttention):
            block.attention = NystromHFAttention(attention, landmarks, iterations)
        else:
            raise VitedgeError(
                f"nystrom replaces the attention of a {FAMILIES[family]}, this block has {type(attention).__name__}",
                "apply nystrom once, to the uncompressed model (transformers ViT/DeiT: transformers 5's q_proj/k_proj/v_proj layout)",
            )
    return model


def token_count(model: nn.Module) -> int | None:
    """How many tokens attention sees at the model's own input size (patches plus class and
    distillation tokens); None where the model does not say."""
    if hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens"):  # timm ViT, EVA
        return int(model.patch_embed.num_patches) + int(model.num_prefix_tokens)
    config = getattr(model, "config", None)  # transformers ViT, DeiT (with its distillation token)
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if isinstance(size, int) and isinstance(patch, int) and patch > 0:
        return (size // patch) ** 2 + (2 if getattr(config, "model_type", "") == "deit" else 1)
    return None


def nystrom(model: nn.Module, *, landmarks: int = 16, iterations: int = 6) -> StepResult:
    """Replace every block's attention by Nyström attention with `landmarks` landmarks."""
    if int(landmarks) < 1 or int(iterations) < 1:
        raise VitedgeError(
            f"nystrom: landmarks={landmarks} and iterations={iterations} must be at least 1",
            "e.g. nystrom:landmarks=16",
        )
    tokens = token_count(model)
    if tokens is not None and int(landmarks) >= tokens:
        raise VitedgeError(
            f"nystrom: landmarks={landmarks} is not fewer than the model's {tokens} tokens: attention would stay "
            "exact, nothing approximated or saved",
            f"use fewer landmarks than tokens, e.g. nystrom:landmarks={max(1, tokens // 4)}",
        )
    options = {"landmarks": int(landmarks), "iterations": int(iterations)}
    return StepResult(_swap(clone(model), **options).eval(), record("nystrom", options))


def _rebuild(model: nn.Module, step: StepRecord) -> nn.Module:
    return _swap(model, int(step["options"]["landmarks"]), int(step["options"].get("iterations", 6)))


STEPS: dict[str, Step] = {
    "nystrom": Step(
        nystrom,
        "Nyströmformer attention with m segment-mean landmarks (same weights; O(N·m) instead of O(N²))",
        rebuild=_rebuild,
        families=FAMILIES_SUPPORTED,
        options={
            "landmarks": "number of landmarks m (default 16)",
            "iterations": "pseudo-inverse iterations (default 6)",
        },
    ),
}
