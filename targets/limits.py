"""What this machine can do at best, measured, so a row's speed can be read as a share of it.

A figure like "5.2 img/s" says little across CPUs; "62% of this CPU's int8 GEMM rate" says
how much is left. Three kinds of limit:
- square GEMMs (`gemm_limits`): the CPU's peak rate, f32 and int8 through ONNX Runtime's own
  kernels (MatMul for f32, MatMulInteger u8×s8 for int8: the kernels the exported models use)
  and bf16 through PyTorch's oneDNN matmul where the CPU has native bf16;
- the model's own Linear layers (`linear_limit`): every nn.Linear product of one image at
  its real shape (ViT-B at batch 1: 197 rows by 768×2304, 768×768, 768×3072, 3072×768, twelve
  times), timed one shape at a time through the same kernels and summed. Its reciprocal is the
  model's speed if nothing but those products cost anything, the ceiling a whole-model row is
  held to. Short-row shapes run well below the square rate (less reuse per weight byte), so the
  square figure overstates what a batch-1 ViT can reach;
- the same products with every weight read once per image (`streamed_linear_limit`, and
  `openvino_streamed_linear_limit` through OpenVINO's int8 FullyConnected kernels, which an
  OpenVINO int8 IR runs instead of ONNX Runtime's): one call of all of them, each with a
  weight of its own, as the whole model reads its weights. Where the int8 kernels are fast,
  reading ViT-B's 86 MB of weights is a large part of an image, and the in-cache figure is a
  ceiling no whole model reaches.
All on the same thread count as the rows.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.overrides import TorchFunctionMode

GEMM_SIZE = 2048


@dataclass(frozen=True)
class GemmLimit:
    kind: str  # f32 | int8 | bf16
    size: int
    threads: int
    ops_per_s: float  # multiply-adds count 2
    runtime: str

    @property
    def giga(self) -> float:
        return self.ops_per_s / 1e9


def forward_flops(module: Any, input_size: tuple[int, int, int]) -> float:
    """Floating-point operations (a multiply-add counts 2) of one image through `module`:
    matrix products, convolutions and attention, as torch's FlopCounterMode counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(torch.zeros((1, *input_size)))
    return float(counter.get_total_flops())


def _best_rate(call: Any, ops: float, seconds: float) -> float:
    """Operations per second of the fastest call within `seconds` after two warm-up calls."""
    call()
    call()
    best, began = float("inf"), time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return ops / best


def products_model(products: Sequence[tuple[str, np.ndarray, int, str]]) -> Any:
    """Linears as an exporter writes them, one node per (input name, weight, rows, output name):
    x (rows × inputs) @ weight, each weight its own constant; MatMul for a float weight,
    MatMulInteger (u8 input, int32 output) for an int8 one. Products that name the same input
    read one graph input; every product's output is a graph output."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inputs, outputs, weights = [], {}, [], []
    for index, (x, weight, rows, y) in enumerate(products):
        integer = weight.dtype == np.int8
        x_type, y_type = (TensorProto.UINT8, TensorProto.INT32) if integer else (TensorProto.FLOAT, TensorProto.FLOAT)
        width, out = weight.shape
        w = "w" if len(products) == 1 else f"w{index}"
        nodes.append(helper.make_node("MatMulInteger" if integer else "MatMul", [x, w], [y]))
        inputs.setdefault(x, helper.make_tensor_value_info(x, x_type, [rows, width]))
        outputs.append(helper.make_tensor_value_info(y, y_type, [rows, out]))
        weights.append(onnx.numpy_helper.from_array(weight, w))
    graph = helper.make_graph(nodes, "gemm", list(inputs.values()), outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def matmul_model(weight: np.ndarray, rows: int) -> Any:
    """One Linear, input `x`, output `y`."""
    return products_model([("x", weight, rows, "y")])


def ort_matmul(kind: str, rows: int, inputs: int, outputs: int, threads: int) -> Any:
    """A call that runs one (rows × inputs) by (inputs × outputs) product through ONNX
    Runtime's kernel for `kind` (f32: MatMul, int8: MatMulInteger u8×s8), the weight a
    constant as in an exported model."""
    model, feeds = linear_chain((LinearShape(rows, inputs, outputs, 1),), kind)
    session = _session(model, threads)
    return lambda: session.run(None, feeds)


def _session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    from .onnxruntime import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def _ort_gemm(kind: str, size: int, threads: int, seconds: float) -> GemmLimit:
    import onnxruntime as ort

    rate = _best_rate(ort_matmul(kind, size, size, size, threads), 2.0 * size**3, seconds)
    return GemmLimit(kind, size, threads, rate, f"onnxruntime {ort.__version__}")


@dataclass(frozen=True)
class LinearShape:
    """One Linear product of a forward pass: `rows` input rows (tokens × batch) by an
    `inputs` × `outputs` weight, occurring `count` times."""

    rows: int
    inputs: int
    outputs: int
    count: int

    @property
    def ops(self) -> float:
        return 2.0 * self.rows * self.inputs * self.outputs * self.count


@dataclass(frozen=True)
class LinearLimit:
    """The model's Linear products of one image through the fastest kernel for `kind`."""

    kind: str  # f32 | int8
    threads: int
    batch: int
    seconds_per_image: float  # the sum over shapes of count × fastest time, over batch
    ops_per_image: float
    shapes: tuple[LinearShape, ...]
    runtime: str
    streamed: bool = False  # every weight read once per image (True) or each shape's one weight in cache

    @property
    def it_per_s(self) -> float:
        return 1.0 / self.seconds_per_image

    @property
    def giga(self) -> float:
        return self.ops_per_image / self.seconds_per_image / 1e9


class _LinearProducts(TorchFunctionMode):
    """Counts every Linear product a forward computes, by shape, at the torch-function level:
    nn.Linear's calls and functional ones alike (timm's class-token trim applies slices of the
    packed qkv weight with F.linear, which module hooks never see). nn.MultiheadAttention's
    projections run inside F.multi_head_attention_forward, one torch function the mode sees
    whole, so they are counted from its arguments the way its in-projection splits them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[int, int, int], int] = {}

    def add(self, rows: int, inputs: int, outputs: int) -> None:
        key = (rows, inputs, outputs)
        self.seen[key] = self.seen.get(key, 0) + 1

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        import torch.nn.functional as F

        kwargs = kwargs or {}
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.add(_rows(args[0]), weight.shape[1], weight.shape[0])
        elif func is F.multi_head_attention_forward:
            self._attention(inspect.signature(func).bind(*args, **kwargs).arguments)
        return func(*args, **kwargs)

    def _attention(self, bound: dict[str, Any]) -> None:
        query, key, value = bound["query"], bound["key"], bound["value"]
        width = query.shape[-1]
        if bound.get("use_separate_proj_weight", False):
            for x, name in ((query, "q_proj_weight"), (key, "k_proj_weight"), (value, "v_proj_weight")):
                self.add(_rows(x), bound[name].shape[1], bound[name].shape[0])
        elif query is key and key is value:
            self.add(_rows(query), width, 3 * width)
        elif key is value:
            self.add(_rows(query), width, width)
            self.add(_rows(key), width, 2 * width)
        else:
            for x in (query, key, value):
                self.add(_rows(x), width, width)
        self.add(_rows(query), width, bound["out_proj_weight"].shape[0])


def _rows(x: Any) -> int:
    return int(np.prod(x.shape[:-1]))


def linear_shapes(module: Any, input_size: tuple[int, int, int], *, batch: int = 1) -> tuple[LinearShape, ...]:
    """Every Linear product of one forward pass at `batch`, as the layers compute them (after
    token merging, pruning or a class-token trim, the shapes the compressed model really runs)."""
    import torch

    products = _LinearProducts()
    with torch.no_grad(), products:
        module.eval()(torch.zeros((batch, *input_size)))
    return tuple(LinearShape(*key, count) for key, count in products.seen.items())


def linear_limit(
    shapes: tuple[LinearShape, ...], threads: int, kind: str = "int8", *, batch: int = 1, seconds: float = 0.5
) -> LinearLimit:
    """Per image: the sum over shapes of count × the fastest call of that shape alone (its one
    weight staying in cache): the kernels' peak on these shapes. A whole model at batch 1 also
    reads every weight from memory once per image (ViT-B: 86 MB of int8), which this leaves
    out, so it is a ceiling, not a target."""
    import onnxruntime as ort

    total = 0.0
    for shape in shapes:
        once = shape.ops / shape.count
        call = ort_matmul(kind, shape.rows, shape.inputs, shape.outputs, threads)
        total += shape.count * once / _best_rate(call, once, seconds)
    ops = sum(shape.ops for shape in shapes)
    return LinearLimit(kind, threads, batch, total / batch, ops / batch, shapes, f"onnxruntime {ort.__version__}")


def linear_chain(shapes: tuple[LinearShape, ...], kind: str) -> tuple[Any, dict[str, np.ndarray]]:
    """The model `streamed_linear_limit` times and its inputs: `count` products of every shape,
    each with a weight of its own (random, as weights do not change speed), the products of one
    input shape reading one input."""
    x_dtype, w_dtype = {"f32": (np.float32, np.float32), "int8": (np.uint8, np.int8)}[kind]
    rng = np.random.default_rng(1)
    products, feeds = [], {}
    for shape, weight in _chain_weights(shapes, w_dtype):
        x = f"x{shape.rows}_{shape.inputs}"
        feeds.setdefault(x, rng.integers(0, 256, (shape.rows, shape.inputs)).astype(x_dtype))
        products.append((x, weight, shape.rows, f"y{len(products)}"))
    return products_model(products), feeds


# Weights in [-64, 64], the range ONNX Runtime's reduce_range gives vitedge's int8 exports: on x86
# CPUs without VNNI or AMX the u8×s8 kernels add pairs of products in 16 bits, which full-range
# weights overflow (255 × 127 × 2 > 32767). The kernel and its speed are the same for any weight;
# only these give every CPU the exact products the chain claims to compute.
CHAIN_WEIGHT_RANGE = (-64, 65)


def _chain_weights(shapes: tuple[LinearShape, ...], dtype: type) -> Iterator[tuple[LinearShape, np.ndarray]]:
    """Every product of `shapes` in order (`count` of each), each with a random weight
    (inputs × outputs) of its own: what both runtimes' chains are built from."""
    rng = np.random.default_rng(0)
    for shape in shapes:
        for _ in range(shape.count):
            yield shape, rng.integers(*CHAIN_WEIGHT_RANGE, (shape.inputs, shape.outputs)).astype(dtype)


def _streamed(
    shapes: tuple[LinearShape, ...], threads: int, kind: str, batch: int, rate: float, runtime: str
) -> LinearLimit:
    ops = sum(shape.ops for shape in shapes)
    return LinearLimit(kind, threads, batch, ops / rate / batch, ops / batch, shapes, runtime, streamed=True)


def streamed_linear_limit(
    shapes: tuple[LinearShape, ...], threads: int, kind: str = "int8", *, batch: int = 1, seconds: float = 2.0
) -> LinearLimit:
    """Per image: one call of every product of the forward, each with its own weight, through
    the same kernels as `linear_limit`: the weights (ViT-B: 86 MB of int8) are read from
    wherever they stay between images, as a whole model reads them. The honest ceiling at
    batch 1 where the kernels are fast enough for those reads to matter; outputs are bound to
    buffers made once, so returning them costs nothing."""
    import onnxruntime as ort

    model, feeds = linear_chain(shapes, kind)
    session = _session(model, threads)
    del model
    binding = session.io_binding()
    for name, x in feeds.items():
        binding.bind_cpu_input(name, x)
    y_dtype = np.int32 if kind == "int8" else np.float32
    for output in session.get_outputs():
        binding.bind_ortvalue_output(output.name, ort.OrtValue.ortvalue_from_numpy(np.empty(output.shape, y_dtype)))
    rate = _best_rate(lambda: session.run_with_iobinding(binding), sum(shape.ops for shape in shapes), seconds)
    return _streamed(shapes, threads, kind, batch, rate, f"onnxruntime {ort.__version__}")


def openvino_linear_chain(shapes: tuple[LinearShape, ...]) -> Any:
    """The OpenVINO model of `linear_chain`: per input shape an f32 input quantized to u8 by a
    FakeQuantize over [0, 1], per product an int8 weight of its own dequantized by a
    per-channel scale (int8 constant → Convert → Multiply, as NNCF writes a weight), then
    MatMul: the pattern OpenVINO's CPU plugin runs as one int8 FullyConnected."""
    import openvino as ov
    import openvino.opset13 as ops

    zero, one = ops.constant(np.float32(0)), ops.constant(np.float32(1))
    inputs: dict[tuple[int, int], tuple[Any, Any]] = {}
    products = []
    for shape, weight in _chain_weights(shapes, np.int8):
        key = (shape.rows, shape.inputs)
        if key not in inputs:
            x = ops.parameter([shape.rows, shape.inputs], ov.Type.f32, name=f"x{shape.rows}_{shape.inputs}")
            inputs[key] = (x, ops.fake_quantize(x, zero, one, zero, one, 256))
        weight_rows = ops.constant(np.ascontiguousarray(weight.T))  # outputs × inputs, as NNCF stores a weight
        scale = ops.constant(np.full((shape.outputs, 1), 0.01, np.float32))
        products.append(
            ops.matmul(inputs[key][1], ops.multiply(ops.convert(weight_rows, ov.Type.f32), scale), False, True)
        )
    return ov.Model([ops.result(y) for y in products], [x for x, _ in inputs.values()], "linear_chain")


class NotInt8(RuntimeError):
    """OpenVINO compiled some products of the int8 chain in another precision (its CPU plugin
    need not run quantized FullyConnected in int8 where the CPU lacks int8 dot products, as on
    ARM cores without dotprod). Timing them would call a float rate an int8 limit, so the
    limit is refused instead; the counts travel as the exception's arguments, so it survives
    pickling back from a child process."""

    def __init__(self, int8: int, products: int, runtime: str) -> None:
        super().__init__(int8, products, runtime)
        self.int8, self.products, self.runtime = int8, products, runtime

    def __str__(self) -> str:
        return (
            f"{self.runtime} ran {self.int8} of {self.products} products of the chain as int8 FullyConnected; "
            "its int8 streamed limit is not measurable on this CPU"
        )


def int8_products(compiled: Any) -> int:
    """How many FullyConnected nodes of a compiled OpenVINO model run in int8 (u8/i8), read
    from its runtime model: a limit must not time a float product and call it int8."""
    from .bundle.run_bundle import INT8_KERNELS, openvino_record

    counts = openvino_record(compiled, ("FullyConnected",))["products"]
    return sum(counts.get(precision, 0) for precision in INT8_KERNELS)


def openvino_streamed_linear_limit(
    shapes: tuple[LinearShape, ...], threads: int, *, batch: int = 1, seconds: float = 2.0
) -> LinearLimit:
    """`streamed_linear_limit` through OpenVINO's int8 FullyConnected kernels (the ones an
    OpenVINO int8 IR runs), compiled with the product's own CPU settings; its outputs stay in
    the request (share_outputs), so copying them out costs nothing. Raises NotInt8 where the
    CPU plugin runs any product in another precision: better no figure than a false one."""
    import openvino as ov

    from .openvino import compile_config

    compiled = ov.Core().compile_model(
        openvino_linear_chain(shapes), "CPU", compile_config("int8", "cpu", threads=threads)
    )
    int8, products = int8_products(compiled), sum(shape.count for shape in shapes)
    if int8 != products:
        raise NotInt8(int8, products, f"OpenVINO {ov.__version__.split('-')[0]}")
    request = compiled.create_infer_request()
    rng = np.random.default_rng(1)
    for x in compiled.inputs:
        request.set_tensor(x, ov.Tensor(rng.random(tuple(x.shape), dtype=np.float32)))
    rate = _best_rate(lambda: request.infer(share_outputs=True), sum(shape.ops for shape in shapes), seconds)
    return _streamed(shapes, threads, "int8", batch, rate, f"openvino {ov.__version__}")


def _torch_bf16_gemm(size: int, threads: int, seconds: float) -> GemmLimit:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    rate = _best_rate(lambda: torch.mm(a, b), 2.0 * size**3, seconds)
    return GemmLimit("bf16", size, threads, rate, f"torch {torch.__version__}")


def gemm_limits(threads: int, *, size: int = GEMM_SIZE, seconds: float = 2.0) -> dict[str, GemmLimit]:
    """f32 and int8 GEMM rates of this CPU on `threads` threads (bf16 too where it is native)."""
    from ..core.cpu import probe_cpu

    limits = {kind: _ort_gemm(kind, size, threads, seconds) for kind in ("f32", "int8")}
    if probe_cpu().bf16:
        limits["bf16"] = _torch_bf16_gemm(size, threads, seconds)
    return limits


def limit_kind(execution_precision: str) -> str:
    """Which GEMM limit a row is held to: int8 rows to int8, bf16 to bf16, the rest to f32."""
    if execution_precision.startswith("int8"):
        return "int8"
    return "bf16" if execution_precision == "bf16" else "f32"
