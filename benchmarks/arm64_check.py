"""arm64 proof: run a bundle's `run_bundle.py classify` and `eval` on aarch64 (Debian arm64
Python + the aarch64 numpy, Pillow and onnxruntime or openvino wheels, under qemu-aarch64 user
emulation) and compare with the same bundle on this x86 machine. Correctness only: emulated
speed means nothing.

    sudo python benchmarks/arm64_check.py [--artifact ARTIFACT ...] [--executorch] [--work ~/.cache/vitedge/arm64]

Exit 0: on every artifact the arm64 logits meet that artifact's own parity bounds against
the x86 logits (exporter.parity: fp32 max |Δ| <= 1e-4; int8 mean cosine >= 0.995 and top-1
agreement >= 97%, since x86 VNNI/AMX and ARM run different int8 kernels and neither is the
reference), and the ImageFolder top-1 of both is within the paired noise; 1: a mismatch;
2: it cannot run here (and why). Without --artifact it exports the embedded vitedge-cifar10
model to ONNX fp32, ORT dynamic int8, ORT static int8, OpenVINO fp32 and OpenVINO int8 (NNCF),
the int8 ones calibrated on cifar10:train (from $VITEDGE_DATA or the cache), and checks those.

How: `debootstrap --foreign --arch=arm64` fetches Debian bookworm's arm64 packages, which are
unpacked with `dpkg-deb -x` (no second stage, so no binfmt registration is needed);
`pip download --platform manylinux_2_28_aarch64` fetches the wheels (the host's versions),
unzipped into a site folder. Each board is emulated as its CPU (`-cpu cortex-a76` for a
Raspberry Pi 5, `cortex-a72` for a Pi 4). qemu 7.2 passes the host's x86 /proc/cpuinfo
through, on which onnxruntime's cpuinfo library crashes at import, and the kernels it picks
must match the emulated CPU, so each emulated process runs in a private mount namespace
(`unshare --mount`) with that board's /proc/cpuinfo bound over the real one; nothing
outside that process sees it. `--qemu` names another qemu-aarch64 (newer ones, such as 10.0, write an
ARM /proc/cpuinfo of their own, which the bind then replaces); the `max` board is qemu's
`-cpu max` (SVE, SME, i8mm, bf16), whose SME qemu 7.2 emulates wrongly (int8 garbage) and
qemu 10.0 rightly. Needs root (debootstrap, unshare), the Debian mirror and
PyPI; the first run downloads about 150 MB into --work, later runs reuse it.

ExecuTorch bundles (`--executorch` adds vitedge-cifar10 as ExecuTorch fp32 and int8; an
`--artifact` that is one counts too) need torch on the board: their site is numpy, Pillow,
torch (the host's release, from `--torch-index`, PyTorch's CPU wheel index by default, since
PyPI's aarch64 torch is the CUDA build whose libraries `import torch` loads), and executorch
with the three packages its runtime imports (flatbuffers, ruamel.yaml, tabulate), as the README
tells a Raspberry Pi to install. Where those wheels cannot be fetched the script says which and
exits 2 after checking the other bundles.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

# board -> (qemu CPU model, /proc/cpuinfo Features, CPU part): the emulated CPU and the
# cpuinfo it shows must agree, or onnxruntime picks kernels the CPU lacks (SIGILL).
BOARDS = {
    "pi5": (
        "cortex-a76",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        0xD0B,
    ),
    "pi4": ("cortex-a72", "fp asimd evtstrm crc32 cpuid", 0xD08),
    "max": (
        "max",
        "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp sve asimdfhm"
        " svei8mm svebf16 i8mm bf16 sme smei8i32 smef32f32",
        0x051,
    ),
}
QEMU = "qemu-aarch64-static"  # Debian's qemu-user-static


def board_cpuinfo(board: str) -> str:
    _, features, part = BOARDS[board]
    return "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part:#x}\nCPU revision\t: 1\n\n"
        for i in range(os.cpu_count() or 1)
    )


TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXECUTORCH_ALONE = ("executorch", "flatbuffers", "ruamel.yaml", "tabulate")  # what its runtime imports
# up to the board Python's glibc (Debian bookworm: 2.36); OpenVINO's aarch64 wheels are manylinux_2_35
PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in (17, 27, 28, 31, 34, 35, 36)) + ("manylinux2014_aarch64",)


def cannot_run(qemu: str = QEMU) -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap unpacks a Debian arm64 tree; unshare --mount gives qemu its own /proc/cpuinfo)"
    for tool, package in (
        (qemu, "qemu-user-static"),
        ("debootstrap", "debootstrap"),
        ("dpkg-deb", "dpkg"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {package})"
    return None


def say(line: str) -> None:
    print(line, flush=True)


def board_options(parser: argparse.ArgumentParser, *, boards: str | None = None) -> None:
    """The options every emulated-arm64 check takes: where its Debian tree and wheels live,
    the mirror they come from and the qemu-aarch64 that runs them; with `boards` (the check's
    default list), which boards it emulates one by one and how many images each runs."""
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "vitedge" / "arm64")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--qemu", default=QEMU, help="the qemu-aarch64 to emulate with (a name on PATH or a path)")
    if boards is not None:
        parser.add_argument("--boards", default=boards, help=f"emulated boards: {', '.join(BOARDS)}")
        parser.add_argument("--images", type=int, default=16)


def chosen_boards(text: str) -> list[str] | None:
    """The emulated boards a `--boards` list names, or None (said why) for an empty list or an unknown board."""
    boards = [b.strip() for b in text.split(",") if b.strip()]
    if not boards or not set(boards) <= set(BOARDS):
        say(f"unknown board(s) in --boards {text}; choose from {', '.join(BOARDS)}")
        return None
    return boards


def finish(
    check: str, problems: list[str], seen: dict, out: Path | None, *, label: str, started: float | None = None
) -> int:
    """A check's ending: what was seen (with the problems) as JSON to `out`, each problem on a
    line, the verdict; exit 1 with problems, else 0."""
    if out:
        out.write_text(json.dumps({**seen, "problems": problems}, indent=2) + "\n")
    for problem in problems:
        say(f"{label} {problem}")
    took = f" in {time.monotonic() - started:.0f} s" if started is not None else ""
    say(f"{check} {'FAILED' if problems else 'PASSED'}{took}")
    return 1 if problems else 0


def arm64_python(work: Path, mirror: str) -> Path:
    """Debian bookworm's arm64 python3.11 unpacked under work/root (once)."""
    root = work / "root"
    ready = root / ".vitedge-ready"
    if not ready.is_file():
        shutil.rmtree(root, ignore_errors=True)
        say(f"debootstrap arm64 bookworm into {root} (first run only)")
        subprocess.run(
            [
                "debootstrap",
                "--foreign",
                "--arch=arm64",
                "--variant=minbase",
                "--include=python3.11,libstdc++6",
                "bookworm",
                str(root),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        ready.touch()
    return root / "usr/bin/python3.11"


def pip_download(wheels: Path, requirements: list[str], *options: str) -> None:
    """aarch64 CPython 3.11 wheels of `requirements` into `wheels` (pip's error if it cannot)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "-d",
            str(wheels),
            *options,
            *requirements,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def arm64_site(
    work: Path, versions: dict[str, str], *, alone: dict[str, str] | None = None, torch_index: str | None = None
) -> Path:
    """aarch64 wheels of `versions` (with their requirements) unzipped into one site (once);
    `alone` without theirs; with `torch_index`, torch (one of `versions`) comes from there."""
    alone = alone or {}
    tag = "-".join(f"{k}{v}" for k, v in sorted({**versions, **alone}.items()))
    site = work / f"site-{tag}"
    if not (site / ".vitedge-ready").is_file():
        shutil.rmtree(site, ignore_errors=True)
        wheels = work / f"wheels-{tag}"
        say(f"pip download aarch64 wheels: {', '.join(f'{k}=={v}' for k, v in {**versions, **alone}.items())}")
        if torch_index and "torch" in versions:
            pip_download(wheels, [f"torch=={versions['torch']}"], "--index-url", torch_index)
        pip_download(wheels, [f"{k}=={v}" for k, v in versions.items() if not (torch_index and k == "torch")])
        if alone:
            pip_download(wheels, [f"{k}=={v}" for k, v in alone.items()], "--no-deps")
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        (site / ".vitedge-ready").touch()
    return site


def run_emulated(
    work: Path, board: str, python: Path, site: Path, args: list[str], qemu: str = QEMU
) -> subprocess.CompletedProcess:
    """python ARGS on an emulated board CPU (by `qemu`, a name on PATH or a path), in a private
    mount namespace whose /proc/cpuinfo describes that CPU."""
    cpuinfo = work / f"cpuinfo.{board}"
    cpuinfo.write_text(board_cpuinfo(board))
    root = python.parents[2]
    script = 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"'
    argv = [
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(cpuinfo),
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        f"PYTHONPATH={site}",
        shutil.which(qemu) or qemu,
        "-cpu",
        BOARDS[board][0],
        "-L",
        str(root),
        str(python),
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1800)


def pip_reason(stderr: str, argv: list[str]) -> str:
    """What made a `pip download` fail, in one line: an index it could not reach (pip then
    reports only the resolution that failed for lack of candidates), else its first error."""
    if "Failed to establish a new connection" in stderr or "Name or service not known" in stderr:
        index = argv[argv.index("--index-url") + 1] if "--index-url" in argv else "the package index"
        return f"{index} cannot be reached from here (name resolution or connection failed), so no aarch64 {argv[-1]} wheel"
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    return errors[0] if errors else (stderr.strip().splitlines() or ["pip failed"])[-1]


def board_site(work: Path, board: str, python: Path, runtime: str, torch_index: str, qemu: str = QEMU) -> Path | str:
    """The aarch64 site of an OpenVINO or ExecuTorch bundle (module docstring), checked to
    import under qemu; or why it cannot be had here."""
    from importlib import metadata

    import numpy
    import PIL

    if runtime == "openvino":
        import openvino

        versions = {
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
            "openvino": openvino.__version__.split("-")[0],
        }
        try:
            site = arm64_site(work, versions)
        except subprocess.CalledProcessError as failed:
            return f"the aarch64 OpenVINO wheels cannot be fetched here: {pip_reason(failed.stderr or '', failed.cmd)}"
        probe = run_emulated(
            work, board, python, site, ["-c", "import openvino; openvino.Core().available_devices"], qemu
        )
        if probe.returncode != 0:
            last = [line for line in probe.stderr.splitlines() if line.strip()]
            return f"the aarch64 OpenVINO runtime does not import under qemu: {last[-1] if last else probe.returncode}"
        return site
    if runtime != "executorch":
        return f"no aarch64 site for runtime {runtime}"

    versions = {"numpy": numpy.__version__, "pillow": PIL.__version__, "torch": metadata.version("torch").split("+")[0]}
    alone = {name: metadata.version(name) for name in EXECUTORCH_ALONE}
    try:
        site = arm64_site(work, versions, alone=alone, torch_index=torch_index)
    except subprocess.CalledProcessError as failed:
        return f"the aarch64 wheels of the ExecuTorch board set cannot be fetched here: {pip_reason(failed.stderr or '', failed.cmd)}"
    probe = run_emulated(
        work, board, python, site, ["-c", "import torch; from executorch.runtime import Runtime; Runtime.get()"], qemu
    )
    if probe.returncode != 0:
        last = [line for line in probe.stderr.splitlines() if line.strip()]
        return f"the aarch64 ExecuTorch runtime does not import under qemu: {last[-1] if last else probe.returncode}"
    return site


def default_artifacts(folder: Path, executorch: bool = False) -> list[Path]:
    """vitedge-cifar10 as ONNX fp32, int8 dynamic and int8 static, OpenVINO fp32 and int8 (256
    calibration images), and with `executorch` as ExecuTorch fp32 and int8 (the same images)."""
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import export_artifact

    loaded = load_model("vitedge-cifar10")
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 256)
    paths = [("onnx", p) for p in ("fp32", "int8-dynamic", "int8-static")] + [("openvino", p) for p in ("fp32", "int8")]
    paths += [("executorch", p) for p in ("fp32", "int8")] if executorch else []
    return [
        export_artifact(
            loaded,
            to=to,
            precision=p,
            out=folder / f"vitedge-cifar10-{to}-{p}",
            calibration=calibration if p in ("int8-static", "int8") else None,
        )
        for to, p in paths
    ]


def openvino_int8(folder: Path) -> Path:
    """vitedge-cifar10 as OpenVINO int8, calibrated on 256 CIFAR-10 training images."""
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import export_artifact

    loaded = load_model("vitedge-cifar10")
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 256)
    return export_artifact(
        loaded, to="openvino", precision="int8", out=folder / "vitedge-cifar10-openvino-int8", calibration=calibration
    )


def sample_images(folder: Path, count: int) -> tuple[list[Path], Path]:
    """`count` real CIFAR-10 test images as PNG, flat and as an ImageFolder."""
    from PIL import Image

    from vitedge.calibration.sources import CIFAR10_CLASSES, open_source

    images = open_source("cifar10")
    flat, tree = folder / "png", folder / "imagefolder"
    paths = []
    for i in range(count):
        label = CIFAR10_CLASSES[int(images.labels[i])]
        (tree / label).mkdir(parents=True, exist_ok=True)
        flat.mkdir(exist_ok=True)
        Image.fromarray(images.get(i)).save(flat / f"{i:03d}.png")
        Image.fromarray(images.get(i)).save(tree / label / f"{i:03d}.png")
        paths.append(flat / f"{i:03d}.png")
    return paths, tree


def run_bundle(bundle: Path, images: list[Path], tree: Path, run) -> tuple[dict, dict] | str:
    """(classify JSON, eval JSON) from one interpreter, or what went wrong."""
    classify = run([str(bundle / "run_bundle.py"), "classify", "--json", *map(str, images)])
    scored = run([str(bundle / "run_bundle.py"), "eval", str(tree), "--json"])
    for done in (classify, scored):
        if done.returncode != 0:
            return f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
    return json.loads(classify.stdout), json.loads(scored.stdout)


def compare(name: str, x86: dict, arm: dict, record: dict | None = None) -> list[str]:
    """The arm64 logits against the x86 ones, held to the artifact precision's parity bounds;
    the figures go into `record[name]` too where a check writes JSON."""
    from vitedge.workflows.parity import compare_logits

    report = compare_logits(
        np.array([item["logits"] for item in x86["images"]]),
        np.array([item["logits"] for item in arm["images"]]),
        precision=x86["precision"],
        identities=[Path(item["image"]).name for item in x86["images"]],
    )
    say(
        f"{name}: {report.precision} bounds {report.tolerance}: max |Δ| {report.max_abs:.1e}, cosine mean {report.cosine_mean:.6f}, "
        f"top-1 agreement {100 * report.top1_agreement:.1f}% -> {'pass' if report.passed else 'FAIL'}"
    )
    if record is not None:
        record[name] = report.to_dict()
    return (
        [f"{name}: {'; '.join(report.failures)} (worst: {', '.join(w[0] for w in report.worst[:3])})"]
        if not report.passed
        else []
    )


def compare_eval(name: str, x86: dict, arm: dict, there: str = "arm64") -> list[str]:
    """ImageFolder top-1 on both: the same when the precision is fp32, within the paired
    noise for the others (different int8 kernels may flip an image or two)."""
    from vitedge.targets.stats import paired_delta

    delta = paired_delta(np.array(x86["hits"], dtype=bool), np.array(arm["hits"], dtype=bool))
    say(
        f"{name}: eval top-1 here {x86['top1']:.2f}% {there} {arm['top1']:.2f}% on {arm['count']} images (Δ {delta.delta:+.2f} [{delta.low:+.2f}, {delta.high:+.2f}])"
    )
    if not delta.within_noise:
        return [f"{name}: eval top-1 differs beyond the noise (Δ {delta.delta:+.2f} points)"]
    return []


def compare_detail(name: str, x86: dict, arm: dict, there: str = "arm64") -> list[str]:
    """What each side's runtime reports it ran (execution precision; OpenVINO's kernels or ONNX
    Runtime's operators, which differ between ISAs): the precisions must agree."""
    here, board = x86.get("detail") or {}, arm.get("detail") or {}
    say(f"{name}: ran here {json.dumps(here.get('kernels'))}, {there} {json.dumps(board.get('kernels'))}")
    if here.get("execution_precision") != board.get("execution_precision"):
        return [
            f"{name}: computed {board.get('execution_precision')!r} on {there}, {here.get('execution_precision')!r} here"
        ]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--artifact",
        type=Path,
        action="append",
        help="artifact folder(s) to check (default: the tiny ViT, fp32 and int8)",
    )
    board_options(parser, boards="pi5,pi4")
    parser.add_argument("--executorch", action="store_true", help="also vitedge-cifar10 as ExecuTorch fp32 and int8")
    parser.add_argument("--torch-index", default=TORCH_CPU_INDEX, help="where the board's CPU-only torch comes from")
    args = parser.parse_args()
    reason = cannot_run(args.qemu)
    if reason:
        say(f"arm64 check cannot run here: {reason}")
        return 2

    import numpy
    import onnxruntime
    import PIL

    from vitedge.core.manifest import read_manifest
    from vitedge.targets.bundle_build import build_bundle

    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    python = arm64_python(args.work, args.mirror)
    site = arm64_site(
        args.work, {"numpy": numpy.__version__, "pillow": PIL.__version__, "onnxruntime": onnxruntime.__version__}
    )
    boards = chosen_boards(args.boards)
    if boards is None:
        return 2
    probe = run_emulated(
        args.work,
        boards[0],
        python,
        site,
        [
            "-c",
            "import platform, onnxruntime, numpy; print(platform.machine(), platform.python_version(), onnxruntime.__version__, numpy.__version__)",
        ],
        args.qemu,
    )
    if probe.returncode != 0:
        say(f"arm64 Python cannot import onnxruntime under qemu: {probe.stderr.strip()[-500:]}")
        return 2
    version = subprocess.run([shutil.which(args.qemu) or args.qemu, "--version"], capture_output=True, text=True)
    say(
        f"emulated by {version.stdout.splitlines()[0] if version.stdout else args.qemu}: {probe.stdout.strip()} (machine, Python, onnxruntime, numpy)"
    )
    problems: list[str] = []
    unrun: list[str] = []
    sites: dict[str, Path | str] = {"onnxruntime": site}
    with tempfile.TemporaryDirectory(prefix="arm64-check-") as scratch:
        scratch = Path(scratch)
        images, tree = sample_images(scratch, args.images)
        for artifact in args.artifact or default_artifacts(scratch / "artifacts", executorch=args.executorch):
            bundle = build_bundle(artifact, scratch / "bundles" / artifact.name)
            runtime = read_manifest(bundle)["bundle"]["runtime"]
            if runtime not in sites:
                sites[runtime] = board_site(args.work, boards[0], python, runtime, args.torch_index, args.qemu)
            if isinstance(sites[runtime], str):
                unrun.append(f"{artifact.name}: {sites[runtime]}")
                continue
            here = sites[runtime]
            results = {
                "x86": run_bundle(
                    bundle, images, tree, lambda a: subprocess.run([sys.executable, *a], capture_output=True, text=True)
                )
            }
            for board in boards:
                results[board] = run_bundle(
                    bundle, images, tree, lambda a, b=board, s=here: run_emulated(args.work, b, python, s, a, args.qemu)
                )
            for where, result in results.items():
                if isinstance(result, str):
                    problems.append(f"{artifact.name} on {where}: {result}")
            if isinstance(results["x86"], str):
                continue
            x86_classify, x86_eval = results["x86"]
            for board in boards:
                if isinstance(results[board], str):
                    continue
                arm_classify, arm_eval = results[board]
                name = f"{artifact.name} on {board} ({BOARDS[board][0]})"
                problems += compare(name, x86_classify, arm_classify)
                problems += compare_eval(name, x86_eval, arm_eval)
                problems += compare_detail(name, x86_eval, arm_eval)
    for problem in problems:
        say(f"MISMATCH {problem}")
    for reason in unrun:
        say(f"NOT CHECKED {reason}")
    verdict = "FAILED" if problems else ("PASSED for what could run" if unrun else "PASSED")
    say(f"arm64 check {verdict} in {time.monotonic() - started:.0f} s")
    return 1 if problems else (2 if unrun else 0)


if __name__ == "__main__":
    sys.exit(main())
