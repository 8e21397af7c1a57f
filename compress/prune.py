"""Pruning by importance.

Unstructured (`prune-magnitude`, `prune-taylor`): zero the least important weights of every
Linear in the transformer blocks. The sparsity is real and reported, but the tensors stay
dense: ONNX Runtime, OpenVINO and PyTorch run them at the same speed (only the compressed
file shrinks). That is the honest baseline for the structured steps.

Structured (`prune-heads`, `prune-mlp`, `prune-structured`): remove whole attention heads
(their qkv rows and proj columns) and MLP hidden channels (fc1 rows, fc2 columns), producing
physically smaller Linear layers, so every runtime does less work. Importance is the squared
weight norm of the group, or with data its first-order Taylor score |w·∂L/∂w| summed over the
group (Molchanov et al. 2019). The same fraction is removed in every block.

Unstructured pruning works on every ViT family (the Linears under its blocks); structured
pruning on timm's VisionTransformer (fused qkv, Mlp) and transformers ViT/DeiT (q/k/v/o
projections, fc1/fc2). timm Eva's attention keeps separate q/v biases beside a fused qkv and
its EVA-02 MLP is gated (SwiGLU), so it is refused rather than sliced by guesswork.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import VitedgeError
from ..models import count_weights
from .step import (
    ALL_VITS,
    Step,
    StepData,
    StepRecord,
    StepResult,
    block_path,
    check_ratio,
    clone,
    family_blocks,
    record,
    require_data,
    require_family,
)

DENSE_NOTE = "unstructured zeros are stored densely: runtimes do not get faster, only compressed files shrink"
Scores = Callable[[nn.Parameter], torch.Tensor]


STRUCTURED_FAMILIES = ("timm-vit", "hf-vit")


def block_linears(model: nn.Module, step: str = "prune") -> list[tuple[str, nn.Linear]]:
    prefix = block_path(model, step) + "."
    return [
        (name, module)
        for name, module in model.named_modules()
        if name.startswith(prefix) and type(module) is nn.Linear
    ]


def taylor_gradients(model: nn.Module, data: StepData, samples: int, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """∂(cross-entropy)/∂w over the first `samples` images, accumulated in fp32, per parameter."""
    inputs, labels = data
    inputs, labels = inputs[:samples], labels[:samples]
    probe = clone(model).eval()
    probe.zero_grad(set_to_none=True)
    for start in range(0, len(inputs), batch_size):
        loss = F.cross_entropy(
            probe(inputs[start : start + batch_size]), labels[start : start + batch_size], reduction="sum"
        ) / len(inputs)
        loss.backward()
    return {name: param.grad.detach().clone() for name, param in probe.named_parameters() if param.grad is not None}


def importance_scores(
    model: nn.Module, importance: str, data: StepData | None, samples: int, step: str
) -> dict[str, torch.Tensor]:
    """Per-weight importance, keyed by parameter name: w² (magnitude) or |w·g| (taylor)."""
    if importance == "magnitude":
        return {name: param.detach() ** 2 for name, param in model.named_parameters()}
    if importance == "taylor":
        grads = taylor_gradients(model, require_data(step, data), int(samples))
        return {name: (param.detach() * grads[name]).abs() for name, param in model.named_parameters() if name in grads}
    raise VitedgeError(f"{step}: unknown importance {importance!r}", "use importance=magnitude or importance=taylor")


def _unstructured(
    model: nn.Module, ratio: float, importance: str, data: StepData | None, samples: int, step: str
) -> StepResult:
    ratio = check_ratio(step, ratio)
    model = clone(model)
    linears = block_linears(model, step)
    scores = importance_scores(model, importance, data, samples, step)
    zeros = total = 0
    with torch.no_grad():
        for name, linear in linears:
            weight, score = linear.weight, scores[f"{name}.weight"]
            drop = int(round(ratio * weight.numel()))
            if drop:
                order = score.flatten().argsort()[:drop]
                weight.view(-1)[order] = 0.0
            zeros += int((weight == 0).sum())
            total += weight.numel()
    everything = count_weights(model)
    structure = {"sparsity": zeros / total, "model_sparsity": zeros / everything, "note": DENSE_NOTE}
    return StepResult(
        model.eval(),
        record(step, {"ratio": ratio, **({"samples": int(samples)} if importance == "taylor" else {})}, structure),
    )


def prune_magnitude(model: nn.Module, *, ratio: float = 0.5) -> StepResult:
    """Zero the `ratio` smallest-|w| weights of every Linear in the blocks (per layer)."""
    return _unstructured(model, ratio, "magnitude", None, 0, "prune-magnitude")


def prune_taylor(
    model: nn.Module, *, ratio: float = 0.5, samples: int = 256, data: StepData | None = None
) -> StepResult:
    """Zero the `ratio` weights with the smallest |w·∂L/∂w| on `samples` labelled images."""
    return _unstructured(model, ratio, "taylor", data, samples, "prune-taylor")


def _removed(count: int, ratio: float) -> int:
    """How many of `count` groups a ratio removes: rounded half up, always keeping one."""
    return min(count - 1, int(ratio * count + 0.5))


def head_scores(attention: nn.Module, scores: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    heads, head_dim = attention.num_heads, attention.head_dim
    qkv = scores[f"{prefix}.attn.qkv.weight"].reshape(3, heads, head_dim, -1).sum((0, 2, 3))
    if f"{prefix}.attn.qkv.bias" in scores:
        qkv = qkv + scores[f"{prefix}.attn.qkv.bias"].reshape(3, heads, head_dim).sum((0, 2))
    proj = scores[f"{prefix}.attn.proj.weight"].reshape(-1, heads, head_dim).sum((0, 2))
    return qkv + proj


def hf_head_scores(attention: nn.Module, scores: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Per head, the scores of its q/k/v rows and o_proj columns (transformers ViT/DeiT)."""
    head_dim, name = int(attention.head_dim), f"{prefix}.attention"
    out = scores[f"{name}.o_proj.weight"]
    total = out.reshape(out.shape[0], -1, head_dim).sum((0, 2))
    for proj in ("q_proj", "k_proj", "v_proj"):
        weight, bias = scores[f"{name}.{proj}.weight"], scores.get(f"{name}.{proj}.bias")
        total = total + weight.reshape(-1, head_dim, weight.shape[-1]).sum((1, 2))
        if bias is not None:
            total = total + bias.reshape(-1, head_dim).sum(1)
    return total


def channel_scores(mlp: nn.Module, scores: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    fc1 = scores[f"{prefix}.mlp.fc1.weight"].sum(1)
    if f"{prefix}.mlp.fc1.bias" in scores:
        fc1 = fc1 + scores[f"{prefix}.mlp.fc1.bias"]
    return fc1 + scores[f"{prefix}.mlp.fc2.weight"].sum(0)


def _linear(source: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear holding the selected output rows / input columns of `source`."""
    weight = source.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    bias = source.bias.detach() if source.bias is not None else None
    bias = bias[rows] if bias is not None and rows is not None else bias
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    if isinstance(norm, nn.Identity):
        return norm
    if not isinstance(norm, nn.LayerNorm):
        raise VitedgeError(
            f"structured pruning cannot slice a {type(norm).__name__}",
            "prune a ViT whose inner norms are LayerNorm or absent",
        )
    sliced = nn.LayerNorm(
        len(keep),
        eps=norm.eps,
        elementwise_affine=norm.elementwise_affine,
        dtype=norm.weight.dtype if norm.weight is not None else None,
    )
    if norm.elementwise_affine:
        with torch.no_grad():
            sliced.weight.copy_(norm.weight[keep])
            if norm.bias is not None:
                sliced.bias.copy_(norm.bias[keep])
    return sliced


def keep_heads(attention: nn.Module, heads: list[int]) -> None:
    """Shrink a timm Attention in place to the given heads (qkv rows, proj columns)."""
    head_dim = attention.head_dim
    per_head = torch.tensor([[h * head_dim + i for i in range(head_dim)] for h in heads]).flatten()
    rows = torch.cat([part * attention.attn_dim + per_head for part in range(3)])
    attention.qkv = _linear(attention.qkv, rows=rows)
    if getattr(attention, "gate", None) is not None:
        attention.gate = _linear(attention.gate, rows=per_head)
    attention.norm = _slice_norm(attention.norm, per_head)
    attention.proj = _linear(attention.proj, cols=per_head)
    attention.num_heads, attention.attn_dim = len(heads), len(heads) * head_dim


def keep_hf_heads(attention: nn.Module, heads: list[int]) -> None:
    """Shrink a transformers ViT/DeiT attention in place to the given heads (q/k/v rows,
    o_proj columns); its forward reads the head count from the projections' width."""
    head_dim = int(attention.head_dim)
    per_head = torch.tensor([[h * head_dim + i for i in range(head_dim)] for h in heads]).flatten()
    attention.q_proj, attention.k_proj, attention.v_proj = (
        _linear(getattr(attention, name), rows=per_head) for name in ("q_proj", "k_proj", "v_proj")
    )
    attention.o_proj = _linear(attention.o_proj, cols=per_head)
    attention.num_attention_heads = len(heads)


def keep_channels(mlp: nn.Module, channels: list[int]) -> None:
    """Shrink a timm Mlp in place to the given hidden channels (fc1 rows, fc2 columns)."""
    keep = torch.tensor(channels)
    mlp.fc1 = _linear(mlp.fc1, rows=keep)
    if getattr(mlp, "norm", None) is not None:  # timm's Mlp has one; transformers' has none
        mlp.norm = _slice_norm(mlp.norm, keep)
    mlp.fc2 = _linear(mlp.fc2, cols=keep)


def _check_block(block: nn.Module, family: str, heads: bool, mlp: bool) -> None:
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention

    from .nystrom import NystromAttention, has_hf_projections

    attention = block.attention if family == "hf-vit" else block.attn
    if family == "hf-vit":
        plain_attention = has_hf_projections(attention)
    else:
        plain_attention = (
            isinstance(attention, (Attention, NystromAttention))
            and type(attention.qkv) is nn.Linear
            and type(attention.proj) is nn.Linear
        )
    if heads and not plain_attention:
        raise VitedgeError(
            f"prune-heads needs plain Linear q/k/v and output projections, found {type(attention).__name__}",
            "prune before lowrank or quantize-dynamic (transformers models: transformers 5's q_proj/k_proj/v_proj layout)",
        )
    block_mlp = getattr(block, "mlp", None)
    linears = all(type(getattr(block_mlp, name, None)) is nn.Linear for name in ("fc1", "fc2"))
    if mlp and not ((family == "hf-vit" or type(block_mlp) is Mlp) and linears):
        raise VitedgeError(
            f"prune-mlp needs a plain MLP with Linear fc1/fc2, found {type(block_mlp).__name__}",
            "prune before lowrank or quantize-dynamic; gated MLPs are not supported",
        )


def apply_structure(model: nn.Module, structure: dict[str, dict[str, list[int]]]) -> nn.Module:
    """Keep the recorded heads/channels per block (used by apply and by rebuild)."""
    family = require_family("prune", model, STRUCTURED_FAMILIES)
    for index, block in enumerate(family_blocks(model, "prune")):
        kept = structure.get(f"blocks.{index}", {})
        if "heads" in kept:
            if family == "hf-vit":
                keep_hf_heads(block.attention, kept["heads"])
            else:
                keep_heads(block.attn, kept["heads"])
        if "channels" in kept:
            keep_channels(block.mlp, kept["channels"])
    return model


def _structured(
    model: nn.Module,
    ratio: float,
    importance: str,
    data: StepData | None,
    samples: int,
    step: str,
    *,
    heads: bool,
    mlp: bool,
) -> StepResult:
    ratio = check_ratio(step, ratio)
    family = require_family(step, model, STRUCTURED_FAMILIES)
    path, blocks = block_path(model, step), family_blocks(model, step)
    for block in blocks:
        _check_block(block, family, heads, mlp)
    scores = importance_scores(model, importance, data, samples, step)
    structure: dict[str, dict[str, list[int]]] = {}
    for index, block in enumerate(blocks):
        prefix, kept = f"{path}.{index}", {}
        if heads:
            score = (
                hf_head_scores(block.attention, scores, prefix)
                if family == "hf-vit"
                else head_scores(block.attn, scores, prefix)
            )
            drop = _removed(len(score), ratio)
            kept["heads"] = sorted(score.argsort(descending=True)[: len(score) - drop].tolist())
        if mlp:
            score = channel_scores(block.mlp, scores, prefix)
            drop = _removed(len(score), ratio)
            kept["channels"] = sorted(score.argsort(descending=True)[: len(score) - drop].tolist())
        structure[f"blocks.{index}"] = kept  # by block index, whatever the family calls its blocks
    before = count_weights(model)
    pruned = apply_structure(clone(model), structure).eval()
    after = count_weights(pruned)
    options = {
        "ratio": ratio,
        "importance": importance,
        **({"samples": int(samples)} if importance == "taylor" else {}),
    }
    return StepResult(pruned, record(step, options, {**structure, "params_before": before, "params_after": after}))


def prune_heads(
    model: nn.Module,
    *,
    ratio: float = 0.25,
    importance: str = "magnitude",
    samples: int = 256,
    data: StepData | None = None,
) -> StepResult:
    """Remove the `ratio` least important attention heads of every block."""
    return _structured(model, ratio, importance, data, samples, "prune-heads", heads=True, mlp=False)


def prune_mlp(
    model: nn.Module,
    *,
    ratio: float = 0.25,
    importance: str = "magnitude",
    samples: int = 256,
    data: StepData | None = None,
) -> StepResult:
    """Remove the `ratio` least important MLP hidden channels of every block."""
    return _structured(model, ratio, importance, data, samples, "prune-mlp", heads=False, mlp=True)


def prune_structured(
    model: nn.Module,
    *,
    ratio: float = 0.25,
    importance: str = "magnitude",
    samples: int = 256,
    data: StepData | None = None,
) -> StepResult:
    """Remove the `ratio` least important heads and MLP channels of every block."""
    return _structured(model, ratio, importance, data, samples, "prune-structured", heads=True, mlp=True)


def _rebuild(model: nn.Module, step: StepRecord) -> nn.Module:
    structure = {key: value for key, value in step["structure"].items() if key.startswith("blocks.")}
    return apply_structure(model, structure)


_UNSTRUCTURED = {"ratio": "fraction of each layer's weights to zero (default 0.5)"}
_STRUCTURED = {
    "ratio": "fraction of heads / channels to remove in every block (default 0.25)",
    "importance": "magnitude (squared weight norm, default) or taylor (|w·grad|, needs --data)",
    "samples": "images used for taylor gradients (default 256)",
}

STEPS: dict[str, Step] = {
    "prune-magnitude": Step(
        prune_magnitude,
        "zero the smallest weights (unstructured; no speedup on dense runtimes)",
        options=_UNSTRUCTURED,
        families=ALL_VITS,
    ),
    "prune-taylor": Step(
        prune_taylor,
        "zero the weights with the smallest |w·grad| on labelled images (unstructured; needs --data)",
        options={**_UNSTRUCTURED, "samples": "images used for the gradients (default 256)"},
        uses=("data",),
        families=ALL_VITS,
    ),
    "prune-heads": Step(
        prune_heads,
        "remove whole attention heads (smaller qkv/proj Linears)",
        rebuild=_rebuild,
        options=_STRUCTURED,
        uses=("data",),
        families=STRUCTURED_FAMILIES,
    ),
    "prune-mlp": Step(
        prune_mlp,
        "remove MLP hidden channels (smaller fc1/fc2 Linears)",
        rebuild=_rebuild,
        options=_STRUCTURED,
        uses=("data",),
        families=STRUCTURED_FAMILIES,
    ),
    "prune-structured": Step(
        prune_structured,
        "remove attention heads and MLP channels together",
        rebuild=_rebuild,
        options=_STRUCTURED,
        uses=("data",),
        families=STRUCTURED_FAMILIES,
    ),
}
