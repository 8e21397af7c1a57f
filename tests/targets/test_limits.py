"""The Linear-layer limit: the shapes a model really runs, and a ceiling built from them."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_class_token_vit

from vitedge.compress.tokens import tokens
from vitedge.targets.limits import LinearShape, linear_chain, linear_limit, linear_shapes, streamed_linear_limit


def test_linear_shapes_are_the_products_one_image_runs():
    model = make_class_token_vit()  # 2 blocks, 64 wide, 4x4 patches on 32x32: 64 patches + class token
    shapes = linear_shapes(model, (3, 32, 32))
    assert set(shapes) == {
        LinearShape(65, 64, 192, 2),  # qkv
        LinearShape(65, 64, 64, 2),  # attention projection
        LinearShape(65, 64, 128, 2),  # fc1
        LinearShape(65, 128, 64, 2),  # fc2
        LinearShape(1, 64, 10, 1),  # head on the pooled class token
    }
    assert sum(shape.ops for shape in shapes) == pytest.approx(2 * 2 * 65 * 64 * (192 + 64 + 128 + 128) + 2 * 64 * 10)
    assert all(shape.rows == 3 * 65 for shape in linear_shapes(model, (3, 32, 32), batch=3) if shape.count == 2)
    assert not any(hook for layer in model.modules() for hook in layer._forward_hooks.values())


def test_linear_shapes_follow_token_merging():
    """A merged model's ceiling is its own: later blocks run fewer rows."""
    model = make_class_token_vit()
    merged = tokens(model, r=8, mode="merge").model
    rows = sorted(
        {shape.rows for shape in linear_shapes(merged, (3, 32, 32)) if shape.inputs == 64 and shape.outputs == 192}
    )
    assert rows[0] < 65 and rows[-1] <= 65


def test_linear_shapes_see_functional_products_of_the_class_token_trim():
    """timm's trimmed last block applies slices of its packed qkv weight with F.linear, no
    nn.Linear call: the query for the class token alone, keys and values for every token."""
    from vitedge.exporter.class_token import class_token_only

    model = make_class_token_vit()
    with class_token_only(model) as trim:
        shapes = linear_shapes(model, (3, 32, 32))
    assert trim.ran
    assert set(shapes) == {
        LinearShape(65, 64, 192, 1),  # first block: qkv over every token
        LinearShape(65, 64, 64, 1),  # its projection
        LinearShape(65, 64, 128, 2),  # its fc1, and the last block's keys and values (functional)
        LinearShape(65, 128, 64, 1),  # its fc2
        LinearShape(1, 64, 64, 2),  # last block: the class token's query (functional), projection
        LinearShape(1, 64, 128, 1),  # its fc1
        LinearShape(1, 128, 64, 1),  # its fc2
        LinearShape(1, 64, 10, 1),  # head
    }


def test_linear_shapes_count_multihead_attention_projections():
    """torchvision's encoder runs nn.MultiheadAttention, whose projections are computed inside
    F.multi_head_attention_forward: packed q/k/v in, then out."""
    from tests.support.families import torchvision_tiny

    shapes = linear_shapes(torchvision_tiny().module, (3, 32, 32))  # 16 patches + class token, 32 wide
    assert set(shapes) == {
        LinearShape(17, 32, 96, 2),
        LinearShape(17, 32, 32, 2),
        LinearShape(17, 32, 64, 2),
        LinearShape(17, 64, 32, 2),
        LinearShape(1, 32, 10, 1),
    }


def test_linear_limit_sums_every_shape_by_its_count(monkeypatch):
    """Each shape's call is timed alone and counted `count` times. The sum is checked on a fixed
    rate (two separate timings of the first shape can differ by more than the second shape's
    41 µs on a shared machine: seen on a Zen 3); the batched call below times for real."""
    import vitedge.targets.limits as limits

    shapes = (LinearShape(16, 64, 64, 3), LinearShape(16, 64, 128, 1))
    with monkeypatch.context() as fixed:
        fixed.setattr(limits, "_best_rate", lambda call, ops, seconds: 1e9)  # ops per second
        once = linear_limit(shapes[:1], 1, "f32", seconds=0.05)
        both = linear_limit(shapes, 1, "f32", seconds=0.05)
    assert once.ops_per_image == 3 * 2 * 16 * 64 * 64
    assert both.ops_per_image == once.ops_per_image + 2 * 16 * 64 * 128
    assert both.seconds_per_image > once.seconds_per_image > 0
    assert once.seconds_per_image == pytest.approx(once.ops_per_image / 1e9)  # all 3 calls, not 1
    assert both.seconds_per_image == pytest.approx(once.seconds_per_image + 2 * 16 * 64 * 128 / 1e9)
    assert both.it_per_s == pytest.approx(1 / both.seconds_per_image)
    batched = linear_limit(shapes, 1, "int8", batch=2, seconds=0.05)
    assert batched.ops_per_image == both.ops_per_image / 2 and batched.kind == "int8"


def test_linear_chain_computes_every_product_with_a_weight_of_its_own():
    """The streamed limit reads as many weights as the forward: one per product, not one per
    shape (a shared weight would stay in cache and measure the in-cache ceiling again)."""
    import onnx
    import onnxruntime as ort

    shapes = (LinearShape(16, 64, 32, 3), LinearShape(1, 32, 8, 2))
    for kind, dtype in (("int8", np.int8), ("f32", np.float32)):
        model, feeds = linear_chain(shapes, kind)
        weights = [onnx.numpy_helper.to_array(w) for w in model.graph.initializer]
        assert [w.shape for w in weights] == [(64, 32)] * 3 + [(32, 8)] * 2
        assert all(w.dtype == dtype for w in weights)
        assert len({w.tobytes() for w in weights}) == 5
        # 7-bit weights, so a u8×s8 kernel's 16-bit pair sums cannot overflow on any x86 CPU
        assert all(np.abs(w.astype(np.int16)).max() <= 64 for w in weights)
        assert {name: x.shape for name, x in feeds.items()} == {"x16_64": (16, 64), "x1_32": (1, 32)}
        outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        inputs = [feeds["x16_64"]] * 3 + [feeds["x1_32"]] * 2
        for x, w, y in zip(inputs, weights, outputs, strict=True):
            expected = x.astype(np.int64) @ w.astype(np.int64)
            np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_streamed_linear_limit_times_the_whole_chain_per_image():
    shapes = (LinearShape(16, 64, 64, 3), LinearShape(16, 64, 128, 1))
    streamed = streamed_linear_limit(shapes, 1, "int8", seconds=0.05)
    assert streamed.streamed and not linear_limit(shapes, 1, "int8", seconds=0.05).streamed
    assert streamed.ops_per_image == 3 * 2 * 16 * 64 * 64 + 2 * 16 * 64 * 128
    assert streamed.seconds_per_image > 0 and streamed.it_per_s == pytest.approx(1 / streamed.seconds_per_image)
    batched = streamed_linear_limit(shapes, 1, "f32", batch=2, seconds=0.05)
    assert batched.ops_per_image == streamed.ops_per_image / 2 and batched.kind == "f32"


def test_openvino_chain_runs_every_product_as_an_int8_fully_connected():
    """The OpenVINO streamed limit times OpenVINO's int8 kernels, each product with its own
    weight, and computes the quantized products it claims to. On x86-64 the CPU plugin runs
    u8×i8 FullyConnected through oneDNN on every CPU it supports, so all five are int8 and the
    limit is measured; elsewhere (ARM's executors) it may run some in float, and the limit must
    then refuse rather than time them."""
    import openvino as ov

    from vitedge.core.cpu import X86_ARCHES, probe_cpu
    from vitedge.targets.limits import NotInt8, int8_products, openvino_linear_chain, openvino_streamed_linear_limit
    from vitedge.targets.openvino import compile_config

    shapes = (LinearShape(16, 64, 32, 3), LinearShape(1, 32, 8, 2))
    model = openvino_linear_chain(shapes)

    def weight(result: ov.Node) -> np.ndarray:  # Result ← MatMul ← Multiply ← Convert ← int8 Constant
        dequantized = result.input_value(0).get_node().input_value(1).get_node()
        return dequantized.input_value(0).get_node().input_value(0).get_node().get_data()

    weights = [weight(result) for result in model.get_results()]
    assert [w.shape for w in weights] == [(32, 64)] * 3 + [(8, 32)] * 2 and len({w.tobytes() for w in weights}) == 5
    assert all(np.abs(w.astype(np.int16)).max() <= 64 for w in weights)  # exact on CPUs without VNNI too
    compiled = ov.Core().compile_model(model, "CPU", compile_config("int8", "cpu", threads=1))
    int8 = int8_products(compiled)
    if probe_cpu().arch in X86_ARCHES:
        assert int8 == 5
    rng = np.random.default_rng(2)
    feeds = {x.get_any_name(): rng.random(tuple(x.shape), dtype=np.float32) for x in compiled.inputs}
    outputs = compiled(feeds)
    inputs = [feeds["x16_64"]] * 3 + [feeds["x1_32"]] * 2
    for x, w, y in zip(inputs, weights, outputs.values(), strict=True):
        expected = (np.round(x * 255) / 255) @ (w.astype(np.float32) * 0.01).T
        np.testing.assert_allclose(y, expected, rtol=0, atol=2e-3 * np.abs(expected).max())
    if int8 < 5:
        with pytest.raises(NotInt8, match=f"ran {int8} of 5 products"):
            openvino_streamed_linear_limit(shapes, 1, seconds=0.05)
        return
    limit = openvino_streamed_linear_limit(shapes, 1, seconds=0.05)
    assert limit.streamed and limit.kind == "int8" and limit.runtime.startswith("openvino")
    assert limit.ops_per_image == 3 * 2 * 16 * 64 * 32 + 2 * 2 * 32 * 8 and limit.seconds_per_image > 0


def test_openvino_streamed_limit_refuses_a_chain_not_run_in_int8(monkeypatch):
    """A float product timed as int8 would flatter every row read against the limit: a chain
    OpenVINO cannot run in int8 (float weights, no quantized input) is refused, with the
    counts, on any CPU."""
    import openvino as ov
    import openvino.opset13 as ops

    import vitedge.targets.limits as limits

    def float_chain(shapes: tuple[LinearShape, ...]) -> ov.Model:
        inputs, products = {}, []
        for shape, weight in limits._chain_weights(shapes, np.float32):
            key = (shape.rows, shape.inputs)
            if key not in inputs:
                inputs[key] = ops.parameter(
                    [shape.rows, shape.inputs], ov.Type.f32, name=f"x{shape.rows}_{shape.inputs}"
                )
            products.append(ops.matmul(inputs[key], ops.constant(weight), False, False))
        return ov.Model([ops.result(y) for y in products], list(inputs.values()), "float_chain")

    monkeypatch.setattr(limits, "openvino_linear_chain", float_chain)
    shapes = (LinearShape(16, 64, 32, 3), LinearShape(1, 32, 8, 2))
    with pytest.raises(limits.NotInt8) as refusal:
        limits.openvino_streamed_linear_limit(shapes, 1, seconds=0.05)
    assert isinstance(refusal.value, RuntimeError) and (refusal.value.int8, refusal.value.products) == (0, 5)
    version = ov.__version__.split("-")[0]
    assert str(refusal.value) == (
        f"OpenVINO {version} ran 0 of 5 products of the chain as int8 FullyConnected; "
        "its int8 streamed limit is not measurable on this CPU"
    )


def test_square_gemm_limits_and_which_limit_a_row_is_held_to():
    from vitedge.core.cpu import probe_cpu
    from vitedge.targets.limits import gemm_limits, limit_kind

    limits = gemm_limits(1, size=64, seconds=0.05)
    assert {"f32", "int8"} <= set(limits) and ("bf16" in limits) == bool(probe_cpu().bf16)
    assert all(limit.ops_per_s > 0 and limit.size == 64 for limit in limits.values())
    assert [limit_kind(p) for p in ("int8+f32", "int8+bf16", "bf16", "f32", "f16")] == [
        "int8",
        "int8",
        "bf16",
        "f32",
        "f32",
    ]
