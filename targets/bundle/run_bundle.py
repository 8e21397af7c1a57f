#!/usr/bin/env python3
"""Run a vitedge bundle on a board: classify images, benchmark, or score an ImageFolder.

This file is copied into every bundle and runs with numpy, Pillow and one runtime
(onnxruntime, openvino or executorch) only: no vitedge, and no torch except for an
ExecuTorch program, whose Python runtime links libtorch (requirements.txt says what to
install). A Raspberry Pi gets these from pip wheels in a minute. The pixels are prepared by
`preprocess.py` beside this file, a verbatim copy of vitedge's own
`calibration/preprocess.py`, so the board sees exactly the inputs the desktop saw (cpu.py
and errors.py are vitedge's own too: the CPU facts, and a library's error in one line).

    python3 run_bundle.py classify cat.jpg dog.png [--top 5] [--json]
    python3 run_bundle.py bench [--batch 1] [--seconds 10] [--json]
    python3 run_bundle.py eval FOLDER [--batch 32] [--logits] [--json]
    python3 run_bundle.py info [--json]

Before loading the model it checks every file the manifest lists (model, weights,
preprocessing) against its sha256 and refuses a mismatch. A mistake the user can fix ends
the program with one line on stderr and exit code 2 (3 when the runtime is missing), never
a traceback. Progress goes to stderr, results to stdout, so `--json` output can be piped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import weakref
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EXIT_USER_ERROR = 2
EXIT_NO_RUNTIME = 3
# ONNX Runtime graph passes vitedge turns off, here and in the host's runner
# (targets/onnxruntime.py imports this): the common-subexpression pass merges identical Q/DQ
# pairs back into one, and a DequantizeLinear with several consumers is not fused into
# MatMulIntegerToFloat: a static int8 transformers ViT (query, key and value Linears on one
# LayerNorm output, each with its own pair, see exporter/quantize.py) then ran those Linears as
# float MatMuls on dequantized inputs. A board must run the graph that was verified and timed.
ORT_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)
# ONNX Runtime operators that compute their product in int8: what its fusions make of a QDQ or a
# dynamic-int8 graph. A product under any other operator (MatMul, Gemm, FusedMatMul, Conv,
# Attention) ran in float.
ORT_INT8_OPS = (
    "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm", "QAttention",
    "ConvInteger", "QLinearConv",
)  # fmt: skip
ORT_PRODUCT_WORDS = ("MatMul", "Gemm", "Conv", "Attention")  # one is in the name of every ORT product operator


INT8_KERNELS = ("u8", "i8")  # OpenVINO's runtime precisions of an int8 product


PRODUCT_LAYERS = ("FullyConnected", "MatMul", "Convolution")


# what each product's runtime-model entry says (OpenVINO's field for it): the precision it runs
# in ({"i8": 25, "f32": 1}) and the oneDNN/ACL implementation ({"brgemm_avx512_amx_i8": 25}),
# which says which ISA the plugin's kernels use here, as the CPU's flags alone do not (a oneDNN
# ISA cap, a plugin without kernels for an extension)
OPENVINO_RECORD = {"products": "runtimePrecision", "kernels": "primitiveType"}


def openvino_record(compiled, kinds: tuple = PRODUCT_LAYERS) -> dict:
    """How many of a compiled OpenVINO model's products (layers of `kinds`) run in each
    precision and each implementation, read in one walk of its runtime model: what the plugin
    chose, kernel by kernel ({"products": {}, "kernels": {}} where a plugin has no runtime
    model). vitedge's own runner and its int8 limit read it from here too."""
    counts: dict = {name: {} for name in OPENVINO_RECORD}
    try:
        ops = compiled.get_runtime_model().get_ops()
    except RuntimeError:
        return counts
    for op in ops:
        info = op.get_rt_info()
        fields = {key: info[key].astype(str) for key in ("layerType", *OPENVINO_RECORD.values()) if key in info}
        if fields.get("layerType") not in kinds:
            continue
        for name, key in OPENVINO_RECORD.items():
            value = fields.get(key, "")
            counts[name][value] = counts[name].get(value, 0) + 1
    return {name: dict(sorted(found.items())) for name, found in counts.items()}


def execution_text(precision: str, float_part: str, int8_ran: bool | None = None) -> str:
    """As vitedge records what a row computes: the float precision, int8 named for int8
    artifacts, unless the runtime's own record says none of the products ran in an int8 kernel
    (`int8_ran` False; None where the runtime keeps no such record)."""
    if precision.startswith("int8") and int8_ran is False:
        return f"{float_part} (no int8 kernel ran)"
    return f"int8+{float_part}" if precision.startswith("int8") else float_part


def openvino_label(precision: str, float_part: str, products: dict | None = None) -> str:
    """`execution_text` from the products' precisions in `openvino_record`; vitedge's OpenVINO
    runner labels its rows with this too."""
    return execution_text(precision, float_part, any(products.get(p) for p in INT8_KERNELS) if products else None)


def onnxruntime_label(precision: str, float_part: str, kernels: dict | None = None) -> str:
    """`execution_text` from the operators of `ProfiledSession`; vitedge's ONNX Runtime
    runner labels its rows with this too."""
    ran = any(op.split(" on ")[0] in ORT_INT8_OPS for op in kernels) if kernels else None
    return execution_text(precision, float_part, ran)


class ProfiledSession:
    """An ONNX Runtime session opened as every vitedge row opens one (ORT_DISABLED_OPTIMIZERS),
    whose first call ONNX Runtime profiles: which fusions it applies, and so whether an int8
    file's products run in int8 at all, is decided by the build, the provider and the graph, not
    by the file, so the operators that call ran the products under are read back (`kernels`,
    None until then; `onnxruntime_kernels`). Profiling ends with that call, so the later calls
    and their timings run unprofiled, and no call is added for it. The session logs fatal
    errors only: with profiling on, ONNX Runtime also logs a profile it cannot write for a file
    it could not load, beside the error it raises for it (which the caller words)."""

    def __init__(self, ort, model_path, options, providers: list) -> None:
        folder = tempfile.mkdtemp(prefix="vitedge-ort-profile-")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "first-call")
        options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(
                str(model_path),
                sess_options=options,
                providers=providers,
                disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
            )
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.kernels: dict | None = None
        self._end = weakref.finalize(self, _end_profile, self.session, folder)  # a session never called

    def run(self, feed: dict) -> list:
        if not self._end.alive:
            return self.session.run(None, feed)
        try:  # the first call; one that fails ends the profile too, and `kernels` stays unread
            outputs = self.session.run(None, feed)
        finally:
            events = self._end()
        self.kernels = onnxruntime_kernels(events, self.session.get_providers()[0])
        return outputs


def _end_profile(session, folder: str) -> list:
    """Ends a session's profiling: the events it wrote, their folder removed."""
    profile = session.end_profiling()
    try:
        return json.loads(Path(profile).read_text()) if profile else []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def onnxruntime_kernels(events: list, provider: str) -> dict:
    """Products per operator in an ONNX Runtime profile ({"DynamicQuantizeMatMul": 19,
    "QAttention": 6, "Conv": 1}); an operator another provider than the session's own ran is
    named with it ("MatMul on CPUExecutionProvider": a GPU row's product left on the CPU)."""
    counts: dict = {}
    for event in events:
        args = event.get("args") or {}
        op = str(args.get("op_name", ""))
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if any(word in op for word in ORT_PRODUCT_WORDS):
            key = op if args.get("provider", provider) == provider else f"{op} on {args['provider']}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def openvino_batch_compiler(core, model, device: str, config: dict):
    """A dynamic-batch IR compiled for one batch size at a time, with a static input shape, or
    None where the IR fixes its batch. OpenVINO's ARM plugin computes int8 FullyConnected wrong
    on a dynamic batch (vitedge-cifar10 int8 under QEMU Cortex-A72/A76: cosine 0.63 against
    PyTorch, 0.9997 with the same IR reshaped static, as on x86), so no CPU is left to its
    dynamic-shape kernels: every plugin gets the static shape it will run. vitedge's own runner
    compiles through this too (targets/openvino.py)."""
    import openvino as ov

    shape = model.input(0).get_partial_shape()
    if shape[0].is_static:
        return None

    def compile_for(size: int):
        static = model.clone()
        static.reshape({static.input(0): ov.PartialShape([size, *shape[1:]])})
        return core.compile_model(static, device, config)

    return compile_for


class BundleError(Exception):
    """A mistake the user can fix; printed as one line."""

    def __init__(self, message: str, code: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _import_base():
    """numpy, Pillow and the vendored preprocessing, with a one-line error if absent."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError as exc:
        raise BundleError(
            f"missing Python package {exc.name!r}: run `{sys.executable} -m pip install -r {HERE / 'requirements.txt'}`",
            EXIT_NO_RUNTIME,
        ) from None
    return np, Image, _vendored("preprocess")


def _vendored(name: str):
    """A module shipped beside this script (vitedge's own preprocessing, copied byte for byte),
    loaded from its file: whatever the working directory or sys.path, the bundle's copy."""
    import importlib.util

    if f"vitedge_bundle_{name}" in sys.modules:
        return sys.modules[f"vitedge_bundle_{name}"]
    spec = importlib.util.spec_from_file_location(f"vitedge_bundle_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def reason(exc: BaseException) -> str:
    """A runtime's or Pillow's error in one line that says why (vitedge's own `first_line`,
    shipped as errors.py): OpenVINO opens with where it raised, and a message can be empty."""
    return _vendored("errors").first_line(exc)


# ---------------------------------------------------------------- manifest and checksums


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} not found: run this script inside its bundle folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); rebuild the bundle") from None
    for key in ("format", "model_file", "files", "data_config", "bundle"):
        if key not in manifest:
            raise BundleError(f"{path} lacks {key!r}; rebuild the bundle with `vitedge bundle`")
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(folder: Path, name: object) -> Path:
    """`folder / name` for a manifest path, refused unless it stays inside `folder` (no absolute
    path, no `..`, no symlink that leads out): a bundle reads nothing outside itself."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise BundleError(
            f"{MANIFEST} names the file {name!r}, which is not a relative path inside the bundle: rebuild the bundle"
        )
    root = folder.resolve()
    resolved = (root / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or not resolved.is_relative_to(root):
        raise BundleError(
            f"{MANIFEST} names the file {name!r}, outside the bundle folder: rebuild the bundle with `vitedge bundle`"
        )
    return folder / name


def loaded_files(manifest: dict) -> list:
    """What the runtime reads: the model file, and beside an OpenVINO .xml its .bin."""
    model_file = manifest["model_file"]
    if manifest["format"] == "openvino" and isinstance(model_file, str) and model_file.endswith(".xml"):
        return [model_file, model_file[: -len(".xml")] + ".bin"]
    return [model_file]


def verify(folder: Path, manifest: dict) -> None:
    """Refuse to run a model (or preprocessing) that differs from what was built and verified,
    that is not among the checksummed files, or that lies outside the bundle."""
    if not isinstance(manifest["files"], list) or not all(
        isinstance(e, dict) and {"path", "sha256", "bytes"} <= set(e) for e in manifest["files"]
    ):
        raise BundleError(f"{MANIFEST}: 'files' must list path, sha256 and bytes of every file: rebuild the bundle")
    listed = {entry["path"] for entry in manifest["files"]}
    for name in loaded_files(manifest):
        inside(folder, name)
        if name not in listed:
            raise BundleError(
                f"the model file {name} is not among the checksummed files in {MANIFEST}, so it cannot be verified: rebuild the bundle"
            )
    for entry in manifest["files"]:
        path = inside(folder, entry["path"])
        if entry["path"] == Path(__file__).name:
            continue  # a script cannot meaningfully vouch for itself
        if not path.is_file():
            raise BundleError(f"bundle file {entry['path']} is missing: copy the whole bundle folder")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(
                f"{entry['path']} does not match the sha256 in {MANIFEST} (corrupt or modified): copy the bundle again"
            )


# ---------------------------------------------------------------- runtimes


# what `pip install` needs for each runtime beyond numpy and Pillow (executorch: its runtime
# links libtorch, and PyTorch's CPU index has the CPU-only torch wheels for ARM boards)
PIP_PACKAGES = {"executorch": "torch executorch --extra-index-url https://download.pytorch.org/whl/cpu"}


def pip_hint(runtime: str) -> str:
    packages = PIP_PACKAGES.get(runtime, runtime)
    return f"{sys.executable} -m pip install -r {HERE / 'requirements.txt'}  (or: {sys.executable} -m pip install numpy pillow {packages})"


class Model:
    """The bundle's model on the bundle's runtime: float32 N×3×H×W → logits."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None) -> None:
        self.runtime = manifest["bundle"]["runtime"]
        self.threads = threads
        model_path = inside(folder, manifest["model_file"])
        self.precision = manifest.get("precision", "fp32")
        # a dynamic ExecuTorch program takes at most max_batch images a call (its buffers are
        # planned for that many); larger batches run as several calls
        self.max_batch = manifest.get("max_batch") if manifest.get("batch", "dynamic") == "dynamic" else None
        if self.runtime == "onnxruntime":
            self._open_onnxruntime(model_path, threads)
        elif self.runtime == "openvino":
            self._open_openvino(model_path, threads, manifest["bundle"].get("inference_precision", "f32"))
        elif self.runtime == "executorch":
            self._open_executorch(model_path, threads)
        else:
            raise BundleError(f"unknown runtime {self.runtime!r} in {MANIFEST}; rebuild the bundle")

    def _open_onnxruntime(self, model_path: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError(
                f"onnxruntime is not installed for {sys.executable}: run `{pip_hint('onnxruntime')}`", EXIT_NO_RUNTIME
            ) from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(
            "mlas.enable_gemm_fastmath_arm64_bfloat16", "0"
        )  # f32 GEMMs on ARM too, as verified
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            profiled = ProfiledSession(ort, model_path, options, ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises untyped errors for bad or too-new models
            raise BundleError(f"onnxruntime {ort.__version__} cannot load {model_path.name}: {reason(exc)}") from None
        session = profiled.session
        input_name = session.get_inputs()[0].name
        self.versions = {"onnxruntime": ort.__version__}
        # read back from the session, not echoed from the arguments (0: the runtime's default)
        self.detail = {
            "provider": session.get_providers()[0],
            "threads": session.get_session_options().intra_op_num_threads,
            "execution_precision": onnxruntime_label(self.precision, "f32"),
        }

        def run(batch):
            outputs = profiled.run({input_name: batch})[0]
            if "kernels" not in self.detail:  # the first call: the operators it ran, and what they compute
                self.detail["kernels"] = profiled.kernels
                self.detail["execution_precision"] = onnxruntime_label(self.precision, "f32", profiled.kernels)
            return outputs

        self._run = run

    def _open_openvino(self, model_path: Path, threads: int | None, inference_precision: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BundleError(
                f"openvino is not installed for {sys.executable}: run `{pip_hint('openvino')}`", EXIT_NO_RUNTIME
            ) from None
        core = ov.Core()
        # stated, never left to the plugin: its default is bf16 on AVX512-BF16/AMX CPUs and f16
        # on ARM, which an fp32 artifact was not verified in (the bundle's manifest says what to use)
        # LATENCY at every batch: one synchronous request at a time (THROUGHPUT's streams would
        # leave it one stream's share of the cores; vitedge's targets/openvino.py says more)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        # a dynamic batch is compiled static for each batch size it is given, one compile kept
        # (openvino_batch_compiler says why)
        try:
            model = core.read_model(str(model_path))
            compile_for = openvino_batch_compiler(core, model, "CPU", config)
            compiled = compile_for(1) if compile_for else core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            raise BundleError(f"openvino {ov.get_version()} cannot load {model_path.name}: {reason(exc)}") from None
        self.versions = {"openvino": ov.get_version()}
        self.detail = {
            "hint": config["PERFORMANCE_HINT"],
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            **openvino_record(compiled),
        }
        self.detail["execution_precision"] = openvino_label(
            self.precision, self.detail["inference_precision"], self.detail["products"]
        )
        self.compiled_by_batch = {} if compile_for is None else {1: compiled}

        def run(batch):
            if compile_for is None:
                return compiled(batch)[0]
            if len(batch) not in self.compiled_by_batch:
                self.compiled_by_batch.clear()
                self.compiled_by_batch[len(batch)] = compile_for(len(batch))
            return self.compiled_by_batch[len(batch)](batch)[0]

        self._run = run

    def _open_executorch(self, model_path: Path, threads: int | None) -> None:
        try:
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as exc:
            missing = exc.name or "executorch"
            raise BundleError(
                f"executorch is not installed for {sys.executable} (no {missing!r}): run `{pip_hint('executorch')}`",
                EXIT_NO_RUNTIME,
            ) from None
        from importlib import metadata

        runtime = Runtime.get()
        if not runtime.backend_registry.is_available("XnnpackBackend"):
            raise BundleError("this executorch build has no XnnpackBackend: install the executorch wheel from PyPI")
        if threads:  # one XNNPACK thread pool per process, set before the program loads
            portable_lib._unsafe_reset_threadpool(threads)
        try:
            method = runtime.load_program(model_path).load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise BundleError(
                f"executorch {metadata.version('executorch')} cannot load {model_path.name}: {reason(exc)}"
            ) from None
        self.versions = {"executorch": metadata.version("executorch"), "torch": torch.__version__}
        # XNNPACK has no precision switch: a program lowered in fp32 computes f32 (vitedge's
        # targets/executorch.py says more); the thread count is read back from the pool
        self.detail = {
            "backend": "XnnpackBackend",
            "threads": portable_lib._threadpool_get_thread_count(),
            "execution_precision": execution_text(self.precision, "f32"),
            "max_batch": self.max_batch,
        }
        self._run = lambda batch: method.execute([torch.from_numpy(batch)])[0].numpy()

    def __call__(self, batch):
        import numpy as np

        try:
            batch = np.require(batch, np.float32, ["C", "W"])
            step = self.max_batch or len(batch)
            outputs = [np.array(self._run(batch[i : i + step]), dtype=np.float32) for i in range(0, len(batch), step)]
            return np.concatenate(outputs)
        except Exception as exc:  # noqa: BLE001 - runtimes raise untyped errors on bad shapes
            raise BundleError(f"{self.runtime} failed on a batch shaped {tuple(batch.shape)}: {reason(exc)}") from None


# ---------------------------------------------------------------- board description


def cpu_model() -> str:
    """The CPU's name: x86 'model name', or a board's 'Model' line (Raspberry Pi)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


def _read(path: str, limit: int = 1 << 18) -> str:
    try:
        with open(path, errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return ""


def cpu_mhz() -> dict:
    """cpu0's current and maximum clock and its governor, where cpufreq exposes them."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    found = {}
    for key, name in (("current", "scaling_cur_freq"), ("max", "cpuinfo_max_freq")):
        text = _read(base + name).strip()
        found[key] = int(text) / 1000.0 if text.isdigit() else None
    found["governor"] = _read(base + "scaling_governor").strip() or None
    return found


def temperature_c():
    """The CPU's temperature in °C from the kernel's thermal zones (a zone whose type names the
    CPU or SoC first, else the first zone), or None where none is readable."""
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*"))
    zones.sort(key=lambda zone: not any(word in _read(str(zone / "type")).lower() for word in ("cpu", "soc", "pkg")))
    for zone in zones:
        text = _read(str(zone / "temp")).strip()
        if text.lstrip("-").isdigit():
            return int(text) / 1000.0
    return None


def peak_rss_mb():
    """This process's peak resident memory (VmHWM), or None where /proc does not say."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def board_info(model: Model | None = None) -> dict:
    """What the board is: platform, Python, its /proc/cpuinfo text, device-tree model, hwcaps,
    kernel architecture, numpy's CPUID view and a oneDNN ISA cap (the desktop reads them with vitedge's own
    parser: CPU model, cores, dotprod/i8mm, emulated or not), clock and temperature, and the
    runtime versions."""
    import numpy as np
    from PIL import __version__ as pillow_version

    info = {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpuinfo": _read("/proc/cpuinfo"),
        "device_tree_model": _read("/proc/device-tree/model").strip("\x00\n "),
        "hwcaps": _vendored("cpu").read_hwcaps(),  # what the process may use (cpuinfo can be the host's)
        "kernel_arch": _vendored("cpu").read_kernel_arch(),  # another family than `machine`: emulated
        "cpu_features": _vendored("cpu").read_cpu_features(),  # numpy's CPUID view (x86: what runs)
        "onednn_cap": _vendored("cpu").read_onednn_cap(),  # OpenVINO's kernels held below the CPU's ISA
        "usable_cpus": list(_vendored("cpu").usable_cpus()),  # [count, cgroup CPU quota]: a taskset, a container
        "cpu_mhz": cpu_mhz(),
        "temperature_c": temperature_c(),
        "versions": {"numpy": np.__version__, "pillow": pillow_version},
    }
    if model is not None:
        info["versions"].update(model.versions)
    return info


# ---------------------------------------------------------------- images


def load_image(path: Path, Image, preprocess, config):
    """One file → float32 3×H×W, or a one-line BundleError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess.preprocess_image(preprocess.to_rgb(image), config)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path} is a folder: classify takes image files (use `eval FOLDER` for a folder)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BundleError(f"{path}: not a readable image ({reason(exc)})") from None


def softmax(logits):
    import numpy as np

    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits, config, k: int) -> list[dict]:
    """Indices sorted by logit (stable, so ties keep index order), with label and probability."""
    import numpy as np

    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")[:k]
    return [{"index": int(i), "label": config.label(int(i)), "probability": float(probs[i])} for i in order]


# ---------------------------------------------------------------- commands


def classify(args, manifest: dict) -> dict:
    np, Image, preprocess = _import_base()
    config = preprocess.DataConfig.from_dict(manifest["data_config"])
    inputs = np.stack([load_image(Path(p), Image, preprocess, config) for p in args.images])
    model = Model(HERE, manifest, args.threads)
    logits = model(inputs)
    # every logit too, so a board's output can be held to the artifact's own parity bounds
    return {
        "precision": manifest.get("precision"),
        "images": [
            {"image": p, "top": top_k(row, config, args.top), "logits": [float(v) for v in row]}
            for p, row in zip(args.images, logits)
        ],
    }


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def bench(args, manifest: dict) -> dict:
    """Warm up, then time single calls until `seconds` pass; throughput is the batch size over
    the median latency (robust to the odd slow call from a board's background daemons)."""
    np, _, preprocess = _import_base()
    if args.batch < 1 or args.seconds <= 0:
        raise BundleError("--batch must be ≥ 1 and --seconds > 0")
    config = preprocess.DataConfig.from_dict(manifest["data_config"])
    height, width = config.image_size
    if too_big := _vendored("cpu").batch_outgrows_memory(args.batch, (3, height, width)):
        raise BundleError(f"{too_big} (time a smaller --batch)")
    inputs = np.random.default_rng(0).standard_normal((args.batch, 3, height, width)).astype(np.float32)
    fixed = manifest.get("batch", "dynamic")
    first = inputs[:1] if fixed == "dynamic" else np.repeat(inputs[:1], int(fixed), axis=0)
    # on the board's fastest cores, before the runtime starts its threads (cpu.pin_to_fastest)
    pinned = _vendored("cpu").pin_to_fastest(args.threads)
    # from nothing loaded (the runtime's import included) to the first answer on one image
    loading = time.perf_counter()
    model = Model(HERE, manifest, args.threads)
    model(first)
    first_inference_ms = (time.perf_counter() - loading) * 1000.0
    before = {"temperature_c": temperature_c(), "cpu_mhz": cpu_mhz()["current"]}
    for _ in range(args.warmup):
        model(inputs)
    latencies: list[float] = []
    start = time.perf_counter()
    cpu_start = time.process_time()
    next_report = start + 5.0
    while True:
        t0 = time.perf_counter()
        model(inputs)
        t1 = time.perf_counter()
        latencies.append((t1 - t0) * 1000.0)
        if t1 >= next_report:
            progress(f"bench: {len(latencies)} runs, {t1 - start:.0f}/{args.seconds:g} s")
            next_report = t1 + 5.0
        if t1 - start >= args.seconds and len(latencies) >= args.min_runs:
            break
    cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - start
    p50 = percentile(latencies, 50)
    return {
        "runtime": model.runtime,
        "precision": manifest.get("precision"),
        "format": manifest["format"],
        "batch": args.batch,
        "threads": args.threads,
        "timed_on": pinned,  # None: every CPU the process may use (alike, or unrated)
        "runs": len(latencies),
        "warmup": args.warmup,
        "it_per_s": args.batch * 1000.0 / p50,
        # CPU seconds of this process per wall second while timed: what the runtime's threads
        # really used (one thread cannot exceed 1.0), beside the thread count it reports
        "cpu_per_wall": cpu_s / wall_s if wall_s > 0 else None,
        "latency_ms": {
            "p50": p50,
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "mean": float(np.mean(latencies)),
        },
        "first_inference_ms": first_inference_ms,
        "peak_rss_mb": peak_rss_mb(),
        # clock and temperature just before the warm-up and just after the timed calls:
        # a board that heats up during the run throttles, and its numbers say so
        "thermal": {"before": before, "after": {"temperature_c": temperature_c(), "cpu_mhz": cpu_mhz()["current"]}},
        "board": board_info(model),
        "detail": model.detail,
    }


def image_folder(
    folder: Path, labels: tuple[str, ...], outputs: int = 0
) -> tuple[list[Path], list[int], dict[str, int], list[str]]:
    """An ImageFolder: one subfolder per class. Folder names that are all model labels map by
    name; none of them, classes are numbered in sorted folder order (torchvision's convention),
    refused where that numbering passes the model's `outputs` (0: not known); some of them is
    refused (vitedge's `calibration.sources.in_model_numbering`, the same rules),
    as are images beside the class folders, which have no class (`require_labels`'s rule).
    Links that lead outside the folder, and links to folders, are left out and named (the
    fourth item): eval reads nothing outside the folder it is given."""
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder (eval takes a folder with one subfolder per class)")
    root = folder.resolve()
    left_out: list[str] = []
    classes = []
    loose = []  # images beside the class folders: no class, so no label (the desktop refuses them too)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            loose.append(path.name)
        if not path.is_dir() or path.name.startswith("."):
            continue
        if path.is_symlink():
            left_out.append(f"{path}: a link to a folder, which eval does not follow")
        else:
            classes.append(path.name)
    if not classes:
        raise BundleError(f"{folder} has no class subfolders (expected FOLDER/<class>/<image>)")
    if loose:
        raise BundleError(
            f"{folder} has no labels ({len(loose)} image(s) lie beside its class folders, e.g. {loose[0]}): "
            "move those images into their class folders, or out of the folder"
        )
    known = [name for name in classes if name in labels]
    if known and len(known) < len(classes):
        strangers = [name for name in classes if name not in labels]
        raise BundleError(
            f"{folder}: its classes {', '.join(known[:3])} are the model's labels but {', '.join(strangers[:3])} "
            f"{'is' if len(strangers) == 1 else 'are'} not, so no numbering of them is the model's "
            "(name every class folder by one of its labels)"
        )
    if not known and outputs and len(classes) > outputs:
        raise BundleError(
            f"{folder}: the labels run from 0 to {len(classes) - 1} (its {len(classes)} class folders in sorted order), "
            f"but the model has {outputs} classes (0 to {outputs - 1}) "
            "(use labelled images of the model's own classes, one class folder per output at the most)"
        )
    mapping = {name: labels.index(name) for name in classes} if known else {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    targets: list[int] = []
    for name in classes:
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                if not (resolved := path.resolve()).is_relative_to(root):
                    left_out.append(f"{path}: a link to {resolved}, outside the folder")
                    continue
                files.append(path)
                targets.append(mapping[name])
    if not files:
        found = f" ({len(left_out)} left out, e.g. {left_out[0]})" if left_out else ""
        raise BundleError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images in its class subfolders{found}")
    return files, targets, mapping, left_out


def evaluate(args, manifest: dict) -> dict:
    np, Image, preprocess = _import_base()
    config = preprocess.DataConfig.from_dict(manifest["data_config"])
    files, targets, mapping, left_out = image_folder(Path(args.folder), config.labels, config.num_classes)
    if args.limit:
        files, targets = files[: args.limit], targets[: args.limit]
    model = Model(HERE, manifest, args.threads)
    correct = seen = 0
    hits: list[bool] = []  # per image, in file order: pairs two runs of the same folder
    scored: list[str] = []  # the images scored, relative to the folder, in the same order
    logits: list[list[float]] = []
    skipped: list[str] = list(left_out)
    next_report = time.perf_counter() + 5.0
    for start in range(0, len(files), args.batch):
        arrays, wanted, names = [], [], []
        for path, target in zip(files[start : start + args.batch], targets[start : start + args.batch]):
            try:
                arrays.append(load_image(path, Image, preprocess, config))
                wanted.append(target)
                names.append(path.relative_to(args.folder).as_posix())
            except BundleError as exc:
                skipped.append(str(exc))
        if not arrays:
            continue
        outputs = model(np.stack(arrays))
        predicted = outputs.argmax(axis=1)
        scored += names
        if args.logits:
            logits += [[float(v) for v in row] for row in outputs]
        hits += [bool(h) for h in predicted == np.asarray(wanted)]
        correct = sum(hits)
        seen += len(arrays)
        if time.perf_counter() >= next_report:
            progress(f"eval: {start + len(arrays)}/{len(files)} images, top-1 so far {100.0 * correct / seen:.2f}%")
            next_report = time.perf_counter() + 5.0
    if skipped:
        progress(f"eval: skipped {len(skipped)} file(s), e.g. {skipped[0]}")
    if not seen:
        raise BundleError(f"no readable images in {args.folder}")
    result = {
        "top1": 100.0 * correct / seen,
        "correct": correct,
        "hits": hits,
        "count": seen,
        "skipped": len(skipped),
        "classes": mapping,
        "runtime": model.runtime,
        "peak_rss_mb": peak_rss_mb(),
        "board": board_info(model),
        "detail": model.detail,  # what ran: the precision it computed in, kernels or operators
    }
    if args.logits:  # every logit of every image: the desktop holds them to the artifact's parity bounds
        result.update(images=scored, logits=logits)
    return result


def info(args, manifest: dict) -> dict:
    _import_base()
    keep = ("format", "precision", "model_file", "bundle", "created")
    return {"manifest": {k: manifest[k] for k in keep if k in manifest}, "board": board_info()}


# ---------------------------------------------------------------- output


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def show(command: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True), flush=True)  # one line: easy to pick out of a stream
        return
    if command == "classify":
        for item in result["images"]:
            print(item["image"])
            for rank, top in enumerate(item["top"], 1):
                print(f"  {rank}. {top['label']:<20} {100.0 * top['probability']:6.2f}%")
    elif command == "bench":
        lat = result["latency_ms"]
        print(
            f"{result['runtime']} {result['precision']} batch {result['batch']}: {result['it_per_s']:.2f} it/s, latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms ({result['runs']} runs) on {result['board']['cpu']}"
        )
    elif command == "eval":
        print(
            f"top-1 {result['top1']:.2f}% ({result['correct']}/{result['count']} images, {result['skipped']} skipped)"
        )
    else:
        print(json.dumps(result, indent=2, sort_keys=True))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def parser() -> argparse.ArgumentParser:
    main = OneLineParser(
        prog="run_bundle.py",
        description="Run a vitedge bundle (numpy + Pillow + onnxruntime, openvino or executorch).",
    )
    commands = main.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("classify", "top-k labels for images"),
        ("bench", "it/s and latency"),
        ("eval", "top-1 on an ImageFolder"),
        ("info", "bundle and board description"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--json", action="store_true", help="print one line of JSON")
        sub.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's choice)")
        if name == "classify":
            sub.add_argument("images", nargs="+", help="image files")
            sub.add_argument("--top", type=int, default=5)
        elif name == "bench":
            sub.add_argument("--batch", type=int, default=1)
            sub.add_argument("--seconds", type=float, default=10.0, help="timed duration after warm-up")
            sub.add_argument("--warmup", type=int, default=5, help="untimed calls first")
            sub.add_argument("--min-runs", type=int, default=10, help="time at least this many calls")
        elif name == "eval":
            sub.add_argument("folder", help="ImageFolder: one subfolder per class")
            sub.add_argument("--batch", type=int, default=32)
            sub.add_argument("--limit", type=int, default=None, help="score only the first N images")
            sub.add_argument("--logits", action="store_true", help="also report every image's logits (with --json)")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        manifest = read_manifest(HERE)
        verify(HERE, manifest)
        result = {"classify": classify, "bench": bench, "eval": evaluate, "info": info}[args.command](args, manifest)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    show(args.command, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
