"""Dynamic int8 and fp16/bf16 casts: outputs close to fp32, saved file small, reload exact."""

from __future__ import annotations

import torch

from tests.support import make_tiny_vit, with_weight_outliers
from vitedge.compress.quantize import STEPS, PackedDynamicLinear, quantize_dynamic
from vitedge.compress.registry import load_model
from vitedge.models import save_checkpoint


def test_dynamic_int8_replaces_every_linear_and_stays_close(tiny_vit, cifar_batch) -> None:
    inputs = torch.from_numpy(cifar_batch[0][:16])
    reference = tiny_vit.module(inputs)
    result = quantize_dynamic(tiny_vit.module)
    layers = result.record["structure"]["layers"]
    assert len(layers) == 2 * 4 + 1  # qkv, proj, fc1, fc2 per block + head
    assert all(type(result.model.get_submodule(name)) is PackedDynamicLinear for name in layers)
    assert type(tiny_vit.module.head) is torch.nn.Linear  # input untouched
    out = result.model(inputs)
    assert (out - reference).abs().max() < 0.05
    assert (out.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


def test_dynamic_int8_default_holds_a_weight_far_out_of_its_tensor(cifar_batch) -> None:
    """The 100-standard-deviation weights of random ViT-Bs (`with_weight_outliers`): one scale
    per output channel, the step's default, keeps the outputs with a fraction of the error of
    PyTorch's one scale per tensor (random ViT-B: cosine 0.9989 against 0.928). Red with the
    default set back to per tensor."""
    model = with_weight_outliers(make_tiny_vit()).module
    inputs = torch.from_numpy(cifar_batch[0])
    with torch.no_grad():
        reference = model(inputs)
        default = quantize_dynamic(model)
        per_tensor = quantize_dynamic(model, per_channel=False)
        errors = {
            name: 1 - torch.nn.functional.cosine_similarity(result.model(inputs), reference).mean().item()
            for name, result in (("default", default), ("per tensor", per_tensor))
        }
    assert default.record["options"] == {"per_channel": True}
    assert errors["default"] < 5e-3, errors  # the int8 parity gate's cosine 0.995
    assert errors["per tensor"] > 5 * errors["default"], errors


def test_int8_checkpoint_is_smaller_and_reloads_bit_identical(tiny_vit, tmp_path) -> None:
    inputs = torch.randn(4, 3, 32, 32)
    for per_channel in (False, True):
        result = quantize_dynamic(tiny_vit.module, per_channel=per_channel)
        state = result.model.state_dict()
        assert state["blocks.0.mlp.fc1.weight"].dtype == torch.int8
        assert state["blocks.0.mlp.fc1.weight_scale"].numel() == (128 if per_channel else 1)
        int8_path = save_checkpoint(tiny_vit.with_module(result.model, result.record), tmp_path / "int8.safetensors")
        fp32_path = save_checkpoint(tiny_vit, tmp_path / "fp32.safetensors")
        assert int8_path.stat().st_size < 0.45 * fp32_path.stat().st_size
        reloaded = load_model(str(int8_path))
        assert torch.equal(reloaded.module(inputs), result.model(inputs))


def test_float_casts_take_and_return_float32(tiny_vit, tmp_path) -> None:
    inputs = torch.randn(4, 3, 32, 32)
    reference = tiny_vit.module(inputs)
    for name, dtype, tolerance in (("fp16", torch.float16, 5e-3), ("bf16", torch.bfloat16, 5e-2)):
        result = STEPS[name].apply(tiny_vit.module)
        assert next(result.model.parameters()).dtype == dtype
        out = result.model(inputs)
        assert out.dtype == torch.float32
        assert (out - reference).abs().max() < tolerance
        path = save_checkpoint(tiny_vit.with_module(result.model, result.record), tmp_path / f"{name}.safetensors")
        reloaded = load_model(str(path))
        assert next(reloaded.module.parameters()).dtype == dtype
        assert torch.equal(reloaded.module(inputs), out)
