"""The compression table's acceptance checks and its markdown, computed from the rows that
`compress_table.py` measured (kept apart so the measuring script stays one job)."""

from __future__ import annotations

from typing import Any


def checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance criteria, computed from the rows' paired speedups."""
    by_name = {row["name"]: row for row in rows}
    base = by_name["fp32 baseline"]
    batches = sorted({batch for row in rows for speeds in row.get("speedup", {}).values() for batch in speeds}, key=int)

    def speedup(row: dict[str, Any], runtime: str, batch: str) -> float | None:
        return row.get("speedup", {}).get(runtime, {}).get(batch)

    result: dict[str, Any] = {}
    recovered = by_name.get("structured 25% heads+MLP + distill fine-tune")
    if recovered:
        onnx_x, drop = speedup(recovered, "onnx", "1"), base["top1"] - recovered["top1"]
        result["structured_pruning"] = {
            "onnx_speedup": onnx_x,
            "onnx_speedup_by_batch": {b: speedup(recovered, "onnx", b) for b in batches},
            "top1_drop": drop,
            "passed": bool(onnx_x and onnx_x >= 1.25 and drop <= 2.0),
        }
    tome = []
    for row in rows:
        if row["group"] == "tokens" and row["name"].startswith("ToMe"):
            drop = base["top1"] - row["top1"]
            for batch in batches:
                torch_x = speedup(row, "torch", batch)
                export_x = max(
                    filter(None, (speedup(row, "onnx", batch), speedup(row, "openvino", batch))), default=None
                )
                passed = bool(torch_x and export_x and torch_x >= 1.3 and export_x >= 1.3 and drop <= 2.0)
                tome.append(
                    {
                        "name": row["name"],
                        "batch": int(batch),
                        "torch_speedup": torch_x,
                        "export_speedup": export_x,
                        "top1_drop": drop,
                        "passed": passed,
                    }
                )
    result["token_merging"] = {"rows": tome, "passed": any(entry["passed"] for entry in tome)}
    curve = {}
    for row in rows:
        if row["group"] == "nystrom":
            m = int(row["name"].split("m=")[1].split()[0])
            curve.setdefault(m, {})["after_finetune" if "fine-tune" in row["name"] else "training_free"] = row["top1"]
    if curve:
        result["nystrom_curve"] = {
            "baseline_top1": base["top1"],
            "by_landmarks": {str(m): curve[m] for m in sorted(curve)},
        }
    students = [row for row in rows if row["group"] == "distill"]
    if len(students) == 2:
        plain, distilled = sorted(students, key=lambda row: "with distillation" in row["name"])
        result["distillation"] = {
            "without": plain["top1"],
            "with": distilled["top1"],
            "passed": distilled["top1"] > plain["top1"],
        }
    return result


def _fmt(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(rows: list[dict[str, Any]], result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# Compression table: {meta['settings']['model']}",
        "",
        f"{meta['machine']['cpu']}, {meta['settings']['threads']} threads; torch {meta['versions']['torch']}, onnxruntime {meta['versions']['onnxruntime']}, openvino {meta['versions']['openvino']}; "
        f"top-1 on {meta['settings']['test_count']} CIFAR-10 test images; it/s at batch 1, img/s at batch {meta['settings']['batches'][-1]} (median call time); (n×): speedup over the baseline, median of paired rounds.",
        "",
        f"| technique | top-1 % | weights | MB | PyTorch it/s | ONNX/OpenVINO it/s (best) | PyTorch img/s b{meta['settings']['batches'][-1]} | best export img/s b{meta['settings']['batches'][-1]} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    big = str(meta["settings"]["batches"][-1])
    for row in rows:
        speeds, ratios = row.get("images_per_s", {}), row.get("speedup", {})

        def cell(runtime: str | None, batch: str, speeds: dict = speeds, ratios: dict = ratios) -> str:
            value = speeds.get(runtime, {}).get(batch) if runtime else None
            ratio = ratios.get(runtime, {}).get(batch) if runtime else None
            return _fmt(value) + (f" ({ratio:.2f}×)" if ratio else "")

        exports = [name for name in ("onnx", "openvino") if big in speeds.get(name, {})]
        export_big = max(exports, key=lambda name: speeds[name][big], default=None)
        export = f"{cell(row['export_runtime'], '1')} {row['export_runtime']}" if row.get("it_per_s_export") else "—"
        name = row["name"] + (f" (sparsity {row['sparsity']:.0%}, dense storage)" if "sparsity" in row else "")
        lines.append(
            f"| {name} | {row['top1']:.2f} | {row['params']:,} | {row['mb']:.2f} | {cell('torch', '1')} | {export} | {cell('torch', big)} | {cell(export_big, big)} |"
        )
    lines += ["", "## Acceptance", ""]
    if "structured_pruning" in result:
        entry = result["structured_pruning"]
        by_batch = ", ".join(f"b{b} {_fmt(x, 2)}×" for b, x in entry["onnx_speedup_by_batch"].items())
        lines.append(
            f"- Structured pruning 25% + fine-tune: ONNX speedup at batch 1 {_fmt(entry['onnx_speedup'], 2)}× (need ≥ 1.25; {by_batch}), top-1 drop {entry['top1_drop']:.2f} pts (need ≤ 2): {'PASS' if entry['passed'] else 'FAIL'}"
        )
    for entry in result["token_merging"]["rows"]:
        lines.append(
            f"- {entry['name']} at batch {entry['batch']}: PyTorch {_fmt(entry['torch_speedup'], 2)}×, best export {_fmt(entry['export_speedup'], 2)}× (need ≥ 1.3 both), drop {entry['top1_drop']:.2f} pts (need ≤ 2): {'PASS' if entry['passed'] else 'FAIL'}"
        )
    if "nystrom_curve" in result:
        curve = result["nystrom_curve"]["by_landmarks"]
        lines.append(
            "- Nyström top-1 vs m (training-free → after fine-tune): "
            + "; ".join(
                f"m={m}: {_fmt(v.get('training_free'), 2)} → {_fmt(v.get('after_finetune'), 2)}"
                for m, v in curve.items()
            )
        )
    if "distillation" in result:
        entry = result["distillation"]
        lines.append(
            f"- Distillation: student with {entry['with']:.2f}% vs without {entry['without']:.2f}%: {'PASS' if entry['passed'] else 'FAIL'}"
        )
    lines.append("- Unstructured pruning stores zeros densely: no runtime gets faster (shown for honesty).")
    return "\n".join(lines) + "\n"
