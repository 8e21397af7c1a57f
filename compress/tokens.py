"""Input patch reduction, training-free: fewer tokens after every block.

`merge` is ToMe (Bolya et al. 2023): bipartite soft matching on the attention keys merges the
r most similar token pairs per block (size-weighted averages), and proportional attention
(adding log(size) to the attention logits) keeps a merged token's weight equal to the tokens
it stands for. `drop` keeps the tokens that receive the most attention (from the class token
when there is one, else from all tokens) and discards r per block.

Everything is tensor algebra with sizes known when the model is traced (argsort, topk, gather,
scatter-add), no data-dependent Python control flow, so the reduced model exports to ONNX and
OpenVINO and keeps its speedup there. Prefix tokens (class, distillation) are never merged or
dropped. `blocks=K` reduces in the first K blocks only: a merge costs about the same in every
block (matching, gathers), while what it saves shrinks towards the end (fewer blocks left to run
on the removed tokens). On vitedge-cifar10 at batch 32, 12 tokens in each of the first 3 blocks
ran 1.41x faster than the plain model in PyTorch, r=9 in all 6 blocks 1.26x, for about the same
top-1 (-1.63 and -1.45 points) and the same token work through the blocks
(benchmarks/compress_acceptance.md). For average-pooled models the last block scales each
token by its size, so the model's plain mean over the remaining tokens is the mean over the
original tokens.
"""

from __future__ import annotations

from contextvars import ContextVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import VitedgeError
from .step import Step, StepRecord, StepResult, clone, record, vit_blocks

MODES = ("merge", "drop")
# While `decision_margins` runs, each reducing block appends, per image, the smallest gap
# between the scores its discrete choices were made on. None (the default) records nothing,
# so training, evaluation and traced exports never pay for it.
_MARGINS: ContextVar[list[torch.Tensor] | None] = ContextVar("token_decision_margins", default=None)


def _record_margins(ranked: torch.Tensor, *more: torch.Tensor) -> None:
    """Record the per-image smallest gap between neighbours of `ranked` (B×K, sorted
    descending: every rank decides a token's place or fate) and of any per-image gaps in `more`."""
    log = _MARGINS.get()
    if log is None:
        return
    gaps = [(ranked[:, :-1] - ranked[:, 1:]).amin(dim=1)] if ranked.shape[1] > 1 else []
    gaps += [gap.amin(dim=1) for gap in more]
    if gaps:
        log.append(torch.stack(gaps).amin(dim=0))


def has_discrete_choices(module: nn.Module) -> bool:
    """Whether the model makes data-dependent discrete choices (which tokens to merge or drop)."""
    return any(
        isinstance(child, TokenReductionBlocks) and any(block.r > 0 for block in child) for child in module.modules()
    )


def decision_margins(module: nn.Module, inputs: np.ndarray, *, batch_size: int = 50) -> np.ndarray | None:
    """Per image, how close the reference model came to making another choice: the smallest
    score gap behind any merge/drop decision (which pair, which tokens, in which order), over
    every block. A gap near float rounding (~1e-6 on these cosine-similarity and attention
    scores) means another runtime's summation order may choose differently and then compute
    a legitimately different result. None for models without such choices."""
    if not has_discrete_choices(module):
        return None
    margins = []
    for start in range(0, len(inputs), batch_size):
        log: list[torch.Tensor] = []
        token = _MARGINS.set(log)
        try:
            with torch.inference_mode():
                module.eval()(
                    torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size], dtype=np.float32))
                )
        finally:
            _MARGINS.reset(token)
        margins.append(torch.stack(log).amin(dim=0).double().numpy())
    return np.concatenate(margins)


def attention_with_keys(
    attention: nn.Module, x: torch.Tensor, log_size: torch.Tensor | None, *, need_keys: bool, need_probs: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """timm Attention's computation, also returning, if asked, the head-averaged keys (ToMe's
    similarity metric) and the attention probabilities; `log_size` (B×N×1) biases every key's
    logit (proportional attention). Without probabilities it uses the fused kernel."""
    tokens = int(x.shape[1])  # static; see bipartite_merge
    gate = attention.gate(x).sigmoid() if getattr(attention, "gate", None) is not None else None
    qkv = attention.qkv(x).reshape(-1, tokens, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attention.q_norm(q), attention.k_norm(k)
    bias = log_size.transpose(1, 2)[:, None] if log_size is not None else None  # B×1×1×N
    probs = None
    if need_probs:
        logits = (q * attention.scale) @ k.transpose(-2, -1)
        probs = attention.attn_drop((logits + bias if bias is not None else logits).softmax(-1))
        out = probs @ v
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=attention.attn_drop.p if attention.training else 0.0
        )
    out = attention.norm(out.transpose(1, 2).reshape(-1, tokens, attention.attn_dim))
    if gate is not None:
        out = out * gate
    return attention.proj_drop(attention.proj(out)), k.mean(1) if need_keys else None, probs


def bipartite_merge(
    x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching on (prefix-free) tokens: split into alternate sets A/B,
    merge the r A-tokens most similar to some B-token into it (size-weighted average).

    Token and channel counts are read as Python ints: only the batch varies, so a traced
    export gets constant shapes instead of a Shape/Gather/Concat chain per gather (on a
    64-token model at batch 1 those chains cost more than the merged tokens save)."""
    tokens, channels = int(x.shape[1]), int(x.shape[2]) + 1
    r = min(r, tokens // 2)
    if r <= 0:
        return x, size
    metric = metric / metric.norm(dim=-1, keepdim=True)
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)
    best, best_index = scores.max(dim=-1)
    ranked, order = best.topk((tokens + 1) // 2, dim=-1)
    order = order[..., None]
    unmerged, merged = order[:, r:], order[:, :r]
    if _MARGINS.get() is not None:  # also which B-token each merged A-token joins: its top-2 gap
        rows = scores.gather(1, merged.expand(-1, -1, scores.shape[-1]))
        top2 = rows.topk(2, dim=-1).values if rows.shape[-1] > 1 else None
        _record_margins(ranked, *((top2[..., 0] - top2[..., 1],) if top2 is not None else ()))
    destination = best_index[..., None].gather(1, merged)

    # size rides along as one more channel, so one gather/scatter pass moves both
    values = torch.cat([x * size, size], dim=-1)
    a, b = values[:, ::2], values[:, 1::2]
    kept = a.gather(1, unmerged.expand(-1, -1, channels))
    moved = a.gather(1, merged.expand(-1, -1, channels))
    values = torch.cat([kept, b.scatter_add(1, destination.expand(-1, -1, channels), moved)], dim=1)
    size = values[..., -1:]
    return values[..., :-1] / size, size


def attention_drop(
    x: torch.Tensor, size: torch.Tensor, importance: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the tokens with the highest `importance` (B×N), dropping r (at least one stays)."""
    tokens = int(x.shape[1])  # static; see bipartite_merge
    keep = tokens - min(r, tokens - 1)
    if keep == tokens:
        return x, size
    if _MARGINS.get() is not None:  # the order of the kept tokens and the cutoff are choices
        _record_margins(importance.topk(keep + 1, dim=-1).values)
    index = importance.topk(keep, dim=-1).indices[..., None]
    return x.gather(1, index.expand(-1, -1, int(x.shape[2]))), size.gather(1, index)


class TokenReductionBlock(nn.Module):
    """A timm Block (same submodules and state-dict keys) that reduces tokens after attention."""

    def __init__(self, block: nn.Module, r: int, mode: str, prefix: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1, self.drop_path1 = block.norm1, block.attn, block.ls1, block.drop_path1
        self.norm2, self.mlp, self.ls2, self.drop_path2 = block.norm2, block.mlp, block.ls2, block.drop_path2
        self.r, self.mode, self.prefix = r, mode, prefix

    def forward(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        merge, reduce = self.mode == "merge", self.r > 0
        out, keys, probs = attention_with_keys(
            self.attn,
            self.norm1(x),
            size.log() if merge else None,
            need_keys=merge and reduce,
            need_probs=not merge and reduce,
        )
        x = x + self.drop_path1(self.ls1(out))
        if reduce:
            x, size = self._reduce(x, size, keys, probs)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))), size

    def _reduce(
        self, x: torch.Tensor, size: torch.Tensor, keys: torch.Tensor | None, probs: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge (with `keys`) or drop (with `probs`) r of the non-prefix tokens."""
        if self.prefix:  # prefix tokens are set aside (no empty slices when there are none)
            head, head_size = x[:, : self.prefix], size[:, : self.prefix]
            x, size = x[:, self.prefix :], size[:, self.prefix :]
            keys = keys[:, self.prefix :] if keys is not None else None
        if keys is not None:
            x, size = bipartite_merge(x, size, keys, self.r)
        else:
            received = probs[:, :, 0, self.prefix :] if self.prefix else probs.mean(2)
            x, size = attention_drop(x, size, received.mean(1), self.r)
        if self.prefix:
            x, size = torch.cat([head, x], dim=1), torch.cat([head_size, size], dim=1)
        return x, size


class TokenReductionBlocks(nn.Sequential):
    """model.blocks, threading each token's size (how many patches it stands for) through."""

    def __init__(self, blocks: list[TokenReductionBlock], prefix: int, weighted_mean: bool) -> None:
        super().__init__(*blocks)
        self.prefix, self.weighted_mean = prefix, weighted_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch.ones_like(x[..., :1])
        for block in self:
            x, size = block(x, size)
        if not self.weighted_mean:
            return x
        tokens = int(x.shape[1]) - self.prefix  # static; see bipartite_merge
        patch_size = size[:, self.prefix :]
        scaled = x[:, self.prefix :] * patch_size * (tokens / patch_size.sum(1, keepdim=True))
        return torch.cat([x[:, : self.prefix], scaled], dim=1)


def _swap(model: nn.Module, r: int, mode: str, blocks: int | None) -> nn.Module:
    from timm.models.vision_transformer import Attention, Block

    originals = vit_blocks(model, "tokens")
    if isinstance(originals, TokenReductionBlocks):
        raise VitedgeError("tokens is already applied to this model", "use one tokens step with the r you want")
    for block in originals:
        if type(block) is not Block or not isinstance(block.attn, Attention):
            raise VitedgeError(
                f"tokens needs timm's plain Block and Attention, found {type(block).__name__}/{type(block.attn).__name__}",
                "apply tokens to a timm ViT (before nystrom is not supported)",
            )
    prefix = int(model.num_prefix_tokens)
    # A plain mean after an Identity final norm can be size-weighted exactly (see forward).
    weighted = (
        model.global_pool == "avg" and isinstance(model.norm, nn.Identity) and getattr(model, "attn_pool", None) is None
    )
    reduced = [
        TokenReductionBlock(block, r if blocks is None or index < blocks else 0, mode, prefix)
        for index, block in enumerate(originals)
    ]
    model.blocks = TokenReductionBlocks(reduced, prefix, weighted)
    return model


def tokens(model: nn.Module, *, r: int = 4, mode: str = "merge", blocks: int | None = None) -> StepResult:
    """Remove `r` tokens per block, in every block or in the first `blocks`, by merging (ToMe)
    or by attention-score dropping."""
    if mode not in MODES:
        raise VitedgeError(f"tokens: unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    if int(r) < 0:
        raise VitedgeError(f"tokens: r={r} must be 0 or more", "e.g. tokens:r=4")
    depth = len(vit_blocks(model, "tokens"))
    if blocks is not None and not 1 <= int(blocks) <= depth:
        raise VitedgeError(
            f"tokens: blocks={blocks} must be between 1 and the model's {depth} blocks",
            "e.g. tokens:r=12,blocks=3, or leave blocks out to reduce in every block",
        )
    options = {"r": int(r), "mode": mode, "blocks": None if blocks is None else int(blocks)}
    reduced = _swap(clone(model), **options).eval()
    counts, current = [], int(reduced.patch_embed.num_patches)
    for block in reduced.blocks:
        current -= min(block.r, current // 2) if mode == "merge" else min(block.r, current - 1)
        counts.append(current)
    return StepResult(reduced, record("tokens", options, {"tokens_after_block": counts}))


def _rebuild(model: nn.Module, step: StepRecord) -> nn.Module:
    blocks = step["options"].get("blocks")  # absent in checkpoints written before the option existed
    return _swap(
        model, int(step["options"]["r"]), str(step["options"]["mode"]), None if blocks is None else int(blocks)
    )


STEPS: dict[str, Step] = {
    "tokens": Step(
        tokens,
        "training-free token reduction: merge (ToMe) or drop r tokens per block",
        rebuild=_rebuild,
        # Eva's rotary embeddings and BEiT/RelPos biases are per patch position, which a merged
        # token no longer has; transformers and torchvision blocks have no size-weighted attention
        families=("timm-vit",),
        options={
            "r": "tokens removed per block (default 4)",
            "mode": "merge (ToMe, default) or drop (attention score)",
            "blocks": "reduce in the first K blocks only (default: every block); late merges save less than they cost",
        },
    ),
}
