"""Token merging (ToMe) and token dropping: r=0 matches the original model, tokens really
shrink per block (or in the first `blocks` only), prefix tokens survive, merged tokens keep
their weight, and a saved reduced model loads back with the same reduction."""

from __future__ import annotations

import pytest
import torch

from tests.support import make_class_token_vit
from vitedge.compress.registry import apply_steps, load_model
from vitedge.compress.tokens import TokenReductionBlocks, bipartite_merge, tokens
from vitedge.core.errors import VitedgeError
from vitedge.models import save_checkpoint


def test_r_zero_keeps_the_output(tiny_vit) -> None:
    inputs = torch.randn(3, 3, 32, 32)
    for model in (tiny_vit.module, make_class_token_vit()):
        reference = model(inputs)
        for mode in ("merge", "drop"):
            result = tokens(model, r=0, mode=mode)
            assert isinstance(result.model.blocks, TokenReductionBlocks)
            assert torch.allclose(result.model(inputs), reference, atol=1e-5)


def test_tokens_shrink_per_block_and_stay_close(tiny_vit, cifar_batch) -> None:
    inputs = torch.from_numpy(cifar_batch[0][:16])
    reference = tiny_vit.module(inputs)
    result = tokens(tiny_vit.module, r=8)
    assert result.record["structure"]["tokens_after_block"] == [56, 48]
    seen = []
    hook = result.model.blocks[1].register_forward_hook(lambda _m, _a, out: seen.append(out[0].shape[1]))
    out = result.model(inputs)
    hook.remove()
    assert seen == [48]
    assert (out - reference).abs().max() < 0.05
    assert tiny_vit.module.blocks.__class__ is not TokenReductionBlocks  # pure


def test_class_token_is_never_merged_or_dropped() -> None:
    model = make_class_token_vit()
    inputs = torch.randn(2, 3, 32, 32)
    for mode in ("merge", "drop"):
        result = tokens(model, r=16, mode=mode)
        captured = []
        hook = result.model.blocks[1].register_forward_hook(lambda _m, _a, out, captured=captured: captured.append(out))
        result.model(inputs)
        hook.remove()
        x, size = captured[0]
        assert x.shape[1] == 1 + 32  # 64 patches - 16 - 16, plus the class token
        assert torch.equal(size[:, 0], torch.ones(2, 1))  # the class token stands for itself
        if mode == "merge":
            assert torch.allclose(size[:, 1:].sum(1), torch.full((2, 1), 64.0))  # every patch counted once


def test_bipartite_merge_averages_by_size() -> None:
    x = torch.tensor([[[1.0], [2.0], [10.0], [4.0]]])  # A = tokens 0, 2; B = tokens 1, 3
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]])
    size = torch.ones(1, 4, 1)
    merged, merged_size = bipartite_merge(x, size, metric, 2)
    assert merged.shape == (1, 2, 1)
    assert torch.equal(merged_size.flatten(), torch.tensor([2.0, 2.0]))
    assert torch.allclose(merged.flatten(), torch.tensor([1.5, 7.0]))


def test_average_pool_weights_merged_tokens_by_size(tiny_vit) -> None:
    """The plain mean the model pools with equals the size-weighted mean of merged tokens,
    i.e. the mean over the original patches."""
    result = tokens(tiny_vit.module, r=8)
    assert result.model.blocks.weighted_mean
    last, pooled = [], []
    hooks = [
        result.model.blocks[-1].register_forward_hook(lambda _m, _a, out: last.append(out)),
        result.model.blocks.register_forward_hook(lambda _m, _a, out: pooled.append(out.mean(1))),
    ]
    result.model(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    x, size = last[0]
    assert not torch.allclose(size, torch.ones_like(size))
    assert torch.allclose(pooled[0], (x * size).sum(1) / size.sum(1), atol=1e-6)
    assert not tokens(make_class_token_vit(), r=4).model.blocks.weighted_mean  # token pooling reads the class token


def test_blocks_reduces_in_the_first_blocks_only(tiny_vit, cifar_batch) -> None:
    inputs = torch.from_numpy(cifar_batch[0][:8])
    result = tokens(tiny_vit.module, r=8, blocks=1)
    assert result.record["options"] == {"r": 8, "mode": "merge", "blocks": 1}
    assert result.record["structure"]["tokens_after_block"] == [56, 56]
    seen = []
    hooks = [
        block.register_forward_hook(lambda _m, _a, out: seen.append((out[0].shape[1], float(out[1].sum(1).mean()))))
        for block in result.model.blocks
    ]
    out = result.model(inputs)
    for hook in hooks:
        hook.remove()
    assert seen == [(56, 64.0), (56, 64.0)]  # the second block keeps the merged tokens and their sizes
    merged_everywhere = tokens(tiny_vit.module, r=8).model(inputs)
    reference = tiny_vit.module(inputs)
    assert (out - reference).abs().max() < (merged_everywhere - reference).abs().max()  # fewer merges, closer


def test_saved_reduced_model_loads_with_the_same_reduction(tiny_vit, tmp_path) -> None:
    inputs = torch.randn(2, 3, 32, 32)
    for options in ({"r": 8, "blocks": 1}, {"r": 4, "mode": "drop"}):
        reduced = apply_steps(tiny_vit, [("tokens", options)])
        loaded = load_model(str(save_checkpoint(reduced, tmp_path / "reduced.safetensors")))
        assert [block.r for block in loaded.module.blocks] == [block.r for block in reduced.module.blocks]
        assert torch.allclose(loaded.module(inputs), reduced.module(inputs), atol=1e-6)


@pytest.mark.parametrize("blocks", [0, 3])
def test_blocks_outside_the_model_is_a_clear_error(tiny_vit, blocks) -> None:
    with pytest.raises(VitedgeError, match="between 1 and the model's 2 blocks"):
        tokens(tiny_vit.module, r=4, blocks=blocks)
