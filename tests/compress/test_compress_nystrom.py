"""Nyström attention: segment means, the iterative pseudo-inverse, and closeness to exact
attention on the tiny ViTs (64 tokens, and 65 with a class token)."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.models.vision_transformer import Attention

from tests.support import make_class_token_vit
from vitedge.compress.nystrom import (
    NystromAttention,
    iterative_pinv,
    nystrom,
    segment_means,
    token_count,
)
from vitedge.core.errors import VitedgeError


def test_segment_means_are_ragged_when_tokens_do_not_divide() -> None:
    means = segment_means(65, 8)
    assert means.shape == (8, 65)
    assert torch.allclose(means.sum(1), torch.ones(8))
    lengths = (means > 0).sum(1)
    assert set(lengths.tolist()) == {8, 9} and int(lengths.sum()) == 65
    assert torch.equal((means > 0).sum(0), torch.ones(65, dtype=torch.long))  # each token in one segment


def test_iterative_pinv_inverts_a_softmax_kernel() -> None:
    torch.manual_seed(0)
    kernel = torch.randn(2, 3, 8, 8).softmax(-1)
    inverse = iterative_pinv(kernel, iterations=20)
    assert torch.allclose(kernel @ inverse @ kernel, kernel, atol=1e-4)
    six = iterative_pinv(kernel)  # the paper's 6 iterations: an approximation, batch-independent
    assert torch.equal(iterative_pinv(kernel[:1]), six[:1])


def test_nystrom_keeps_weights_and_tracks_exact_attention(tiny_vit) -> None:
    for model, tokens in ((tiny_vit.module, 64), (make_class_token_vit(), 65)):
        inputs = torch.randn(3, 3, 32, 32)
        reference = model(inputs)
        result = nystrom(model, landmarks=8)
        assert all(isinstance(block.attn, NystromAttention) for block in result.model.blocks)
        assert all(isinstance(block.attn, Attention) for block in model.blocks)  # pure
        assert result.model.state_dict().keys() == model.state_dict().keys()
        assert (result.model(inputs) - reference).abs().max() < 0.05, tokens
        exact = copy.deepcopy(model)  # m >= N: exact attention (the step refuses it: see below)
        for block in exact.blocks:
            block.attn = NystromAttention(block.attn, tokens)
        assert torch.allclose(exact(inputs), reference, atol=1e-5)


def test_a_nystrom_model_measured_first_still_trains(tiny_vit) -> None:
    """A study recipe's Nyström row measured (PyTorch's runner: inference mode), then a row
    fine-tuning the same shape: the landmark matrix cached under inference mode failed the
    training step ("Inference tensors cannot be saved for backward")."""
    segment_means.cache_clear()
    model = nystrom(tiny_vit.module, landmarks=8).model
    inputs = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        model.eval()(inputs)
    model.train()(inputs).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_as_many_landmarks_as_tokens_is_refused(tiny_vit, tmp_path) -> None:
    """A no-op recorded as compression (before: `nystrom:landmarks=1000` on the 64-token model
    saved a model whose attention is exact, no faster). The count is read from the model: 64
    patches for the tiny ViT, 65 with a class token, 16 + 2 for a transformers DeiT."""
    from tests.support.families import hf_tiny

    deit = hf_tiny(tmp_path / "deit", "deit").module
    for model, tokens in ((tiny_vit.module, 64), (make_class_token_vit(), 65), (deit, 18)):
        assert token_count(model) == tokens
        with pytest.raises(VitedgeError, match=f"landmarks={tokens} is not fewer than the model's {tokens} tokens"):
            nystrom(model, landmarks=tokens)
        nystrom(model, landmarks=tokens - 1)


def test_nystrom_error_falls_with_more_landmarks_on_peaked_attention(tiny_vit) -> None:
    """Random weights give near-uniform attention, which any m approximates; sharpen the
    queries so the landmark count matters, as it does in a trained model."""
    model = tiny_vit.module
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:128] *= 4.0
    inputs = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(inputs)
        errors = [float((nystrom(model, landmarks=m).model(inputs) - reference).abs().mean()) for m in (4, 16, 32)]
    assert errors[0] > errors[1] > errors[2]
