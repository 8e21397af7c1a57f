"""The TensorRT execution-provider options built for each artifact precision. TensorRT cannot
run here (no GPU), so this checks the pure function that open_onnx hands to ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitedge.core.errors import VitedgeError
from vitedge.targets.onnxruntime import PROVIDERS, TENSORRT, provider_options

CACHE = Path("/home/user/.cache/vitedge")


def trt(precision: str) -> dict:
    providers = provider_options("tensorrt", precision, CACHE)
    assert [name for name, _ in providers] == PROVIDERS["tensorrt"]
    assert dict(providers)["CUDAExecutionProvider"] == {"use_tf32": "0"}  # the fallback's float parts in f32, not TF32
    assert dict(providers)["CPUExecutionProvider"] == {}
    return dict(providers)[TENSORRT]


def test_fp32_caches_engines_and_enables_no_reduced_precision() -> None:
    options = trt("fp32")
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(CACHE / "trt")
    assert "trt_fp16_enable" not in options and "trt_int8_enable" not in options


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic"])
def test_fp16_and_dynamic_int8_enable_fp16_only(precision: str) -> None:
    """Dynamic int8 has no Q/DQ pairs for TensorRT's int8 to use: fp16 is what it gains."""
    options = trt(precision)
    assert options["trt_fp16_enable"] is True and "trt_int8_enable" not in options
    assert options["trt_engine_cache_enable"] is True


def test_static_qdq_int8_enables_int8_and_fp16() -> None:
    options = trt("int8-static")
    assert options["trt_int8_enable"] is True and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_path"] == str(CACHE / "trt")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_other_devices_get_no_tensorrt_options(device: str) -> None:
    expected = {"CUDAExecutionProvider": {"use_tf32": "0"}}  # never TensorRT's; CUDA's float parts stay f32
    assert provider_options(device, "int8-static", CACHE) == [
        (name, expected.get(name, {})) for name in PROVIDERS[device]
    ]


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(VitedgeError, match="cannot run on target 'npu'"):
        provider_options("npu", "fp32", CACHE)
