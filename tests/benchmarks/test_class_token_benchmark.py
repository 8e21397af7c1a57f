"""benchmarks/class_token.py: each pair is the same export trimmed and whole, computing the same
logits, and the work fraction is the trimmed forward's real share of the Linear products."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.exporter.test_class_token import _class_token_vit
from tests.support import make_class_token_vit
from tests.support.families import hf_tiny
from vitedge.models import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import class_token  # noqa: E402


def trimmed_share(tokens: int, width: int, mlp: int, classes: int) -> float:
    """A 2-block class-token ViT's trimmed share of its Linear multiply-adds, counted by hand."""
    per_token = 4 * width * width + 2 * width * mlp  # q, k, v, o; fc1, fc2
    last = tokens * 2 * width * width + (
        2 * width * width + 2 * width * mlp
    )  # k, v of every token; q, o, fc1, fc2 of one
    head = width * classes  # the classifier, on one token either way
    return (tokens * per_token + last + head) / (2 * tokens * per_token + head)


def test_the_work_fraction_counts_what_the_trimmed_block_leaves_out(tmp_path):
    hf = hf_tiny(tmp_path / "hf")  # 2 layers, 32 wide, MLP 64, 16 patches + the class token
    assert class_token.work_fraction(hf.module, hf.data_config.input_size) == trimmed_share(17, 32, 64, 10)
    timm = make_class_token_vit()  # 64 wide, MLP 128, 64 patches + the class token; trimmed q/kv are F.linear calls
    assert class_token.work_fraction(timm, (3, 32, 32)) == trimmed_share(65, 64, 128, 10)


def test_a_pair_is_one_export_trimmed_and_whole(tmp_path):
    checkpoint = save_checkpoint(_class_token_vit(), tmp_path / "cls.safetensors")
    out = tmp_path / "result.json"
    args = ["--out", str(out), "--model", str(checkpoint), "--kinds", "onnx:fp32", "onnx:int8-dynamic"]
    assert class_token.main([*args, "--rounds", "1", "--seconds", "0.05", "--calib-samples", "8"]) == 0
    result = json.loads(out.read_text())
    fp32, int8 = result["pairs"]
    assert (fp32["kind"], fp32["last_block_tokens"], fp32["computes"]) == ("onnx:fp32", 1, "f32")
    assert fp32["max_abs_logit_difference"] < 2e-5  # the same logits, trimmed or not
    assert 0 < int8["max_abs_logit_difference"] < 0.5  # int8 scales over fewer tokens: close, not equal
    for pair in result["pairs"]:
        assert pair["trimmed_over_whole"] == pair["trimmed_images_per_s"] / pair["whole_images_per_s"]
    assert "| onnx:int8-dynamic | int8+f32 | 1 |" in out.with_suffix(".md").read_text()
