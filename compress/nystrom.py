"""Nyströmformer attention (Xiong et al. 2021) as a drop-in for timm's Attention in a trained
model: the same qkv/proj weights, so the state dict is unchanged and only the attention math
differs.

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

from ..core.errors import VitedgeError
from .step import Step, StepRecord, StepResult, clone, record, vit_blocks


@lru_cache(maxsize=64)
def segment_means(tokens: int, landmarks: int) -> torch.Tensor:
    """An m×N matrix whose row i averages the i-th of m contiguous, near-equal segments
    (cached: built once per shape, a constant in traced exports; never modified)."""
    bounds = [(i * tokens) // landmarks for i in range(landmarks + 1)]
    rows = [
        [1.0 / (bounds[i + 1] - bounds[i]) if bounds[i] <= t < bounds[i + 1] else 0.0 for t in range(tokens)]
        for i in range(landmarks)
    ]
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
        if self.landmarks >= tokens:
            out = self.attn_drop((q @ k.transpose(-2, -1)).softmax(-1)) @ v
        else:
            means = segment_means(tokens, self.landmarks).to(x.dtype)
            q_landmarks, k_landmarks = means @ q, means @ k
            kernel_1 = (q @ k_landmarks.transpose(-2, -1)).softmax(-1)
            kernel_2 = (q_landmarks @ k_landmarks.transpose(-2, -1)).softmax(-1)
            kernel_3 = self.attn_drop((q_landmarks @ k.transpose(-2, -1)).softmax(-1))
            out = (kernel_1 @ iterative_pinv(kernel_2, self.iterations)) @ (kernel_3 @ v)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


def _swap(model: nn.Module, landmarks: int, iterations: int) -> nn.Module:
    from timm.models.vision_transformer import Attention

    from .tokens import TokenReductionBlocks

    blocks = vit_blocks(model, "nystrom")
    if isinstance(blocks, TokenReductionBlocks):
        raise VitedgeError(
            "nystrom cannot follow tokens (token merging computes its own attention)",
            "apply nystrom first, or drop one of them",
        )
    for block in blocks:
        if not isinstance(block.attn, Attention):
            raise VitedgeError(
                f"nystrom replaces timm Attention, this block has {type(block.attn).__name__}",
                "apply nystrom to a plain timm ViT",
            )
        block.attn = NystromAttention(block.attn, landmarks, iterations)
    return model


def nystrom(model: nn.Module, *, landmarks: int = 16, iterations: int = 6) -> StepResult:
    """Replace every block's attention by Nyström attention with `landmarks` landmarks."""
    if int(landmarks) < 1 or int(iterations) < 1:
        raise VitedgeError(
            f"nystrom: landmarks={landmarks} and iterations={iterations} must be at least 1",
            "e.g. nystrom:landmarks=16",
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
        options={
            "landmarks": "number of landmarks m (default 16)",
            "iterations": "pseudo-inverse iterations (default 6)",
        },
    ),
}
