"""Shared fixtures: a tiny 32×32 ViT (seconds to export) and real CIFAR-10 test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibration.preprocess import DataConfig
from calibration.sources import CIFAR10_CLASSES, open_source
from vitedge.models import LoadedModel, build_architecture
from vitedge.training import CIFAR10_MEAN, CIFAR10_STD, cifar_vit_architecture

torch.set_num_threads(1)


def make_tiny_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images."""
    torch.manual_seed(seed)
    architecture = cifar_vit_architecture(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, **overrides)
    module = build_architecture(architecture).eval()
    config = DataConfig(input_size=(3, 32, 32), interpolation="bicubic", mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, num_classes=10, labels=CIFAR10_CLASSES)
    return LoadedModel(module, config, "tiny-vit", architecture)


@pytest.fixture()
def tiny_vit() -> LoadedModel:
    return make_tiny_vit()


@pytest.fixture(scope="session")
def cifar_test():
    """The real CIFAR-10 test set (from ../shared/data or $VITEDGE_DATA)."""
    return open_source("cifar10")


@pytest.fixture(scope="session")
def cifar_batch(cifar_test) -> tuple[np.ndarray, np.ndarray]:
    """64 real test images, preprocessed for the tiny ViT, with their labels."""
    from calibration.preprocess import preprocess_batch

    config = make_tiny_vit().data_config
    images = [cifar_test.get(i) for i in range(64)]
    return preprocess_batch(images, config), np.asarray(cifar_test.labels[:64])


# Known product defects these tests found in the last session, each still open on its issue;
# marked (not skipped) so they keep running and turn up as XPASS once fixed.
KNOWN_FAILURES = {
    "tests/test_bad_inputs.py::test_bad_input_is_refused_cleanly[fixed-batch-onnx-fed-batch-8]": "issue 8: a fixed-batch ONNX artifact fed another batch size raises a traceback",
    "tests/test_bad_inputs.py::test_disk_full[compress]": "issue 8: compress on a full disk does not give the one-line error",
    "tests/test_bad_inputs.py::test_ctrl_c_during_export_leaves_nothing_and_a_rerun_succeeds": "issue 8: Ctrl-C during export not yet clean",
    "tests/test_bad_inputs.py::test_odd_but_valid_images_decode_to_the_right_rgb": "issue 8: an odd image mode decodes to different RGB than expected",
    "tests/test_determinism.py::test_other_paths_twice_in_one_process[openvino-fp32]": "issue 8: OpenVINO IR bytes differ between two exports (determinism not yet established)",
    "tests/test_determinism.py::test_other_paths_twice_in_one_process[openvino-fp16]": "issue 8: OpenVINO IR bytes differ between two exports",
    "tests/test_determinism.py::test_other_paths_twice_in_one_process[openvino-int8]": "issue 8: OpenVINO IR bytes differ between two exports",
    "tests/test_fuzz.py::test_decode_valid_and_truncated_files": "issue 8: decode_image lets an OSError escape on a truncated file",
    "tests/test_fuzz.py::test_recipe_parser_on_toml_punctuation": "issue 8: the recipe parser raises a non-VitedgeError on generated TOML",
    "tests/test_study.py::test_quick_study_on_tiny_model_reports_only_measured_figures": "issue 9: quick study on the tiny model fails its figure check",
}


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001 - pytest hook
    for item in items:
        reason = KNOWN_FAILURES.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
