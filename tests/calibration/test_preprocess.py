from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitedge.calibration.preprocess import DataConfig, preprocess_image


@pytest.mark.parametrize("size", [(300, 200), (180, 260), (224, 224)])
@pytest.mark.parametrize("model", ["vit_base_patch16_224", "deit_small_patch16_224"])
def test_matches_timm_eval_transform_on_real_images(cifar_test, size: tuple[int, int], model: str) -> None:
    """Real CIFAR-10 images upscaled to camera-like sizes, through timm's own eval transform."""
    import timm
    import timm.data

    from vitedge.models import data_config_for

    module = timm.create_model(model, pretrained=False, num_classes=0)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=module))
    config = data_config_for(module)
    for index in (0, 7, 42):
        image = Image.fromarray(cifar_test.get(index)).resize(size, Image.Resampling.BICUBIC)
        expected = transform(image).numpy()
        ours = preprocess_image(image, config)
        assert ours.shape == expected.shape == (3, 224, 224)
        assert np.abs(ours - expected).max() <= 1e-5


def test_squash_mode_and_array_fast_path(cifar_test) -> None:
    pixels = cifar_test.get(3)
    config = DataConfig(
        input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0, num_classes=10
    )
    fast = preprocess_image(pixels, config)
    slow = preprocess_image(Image.fromarray(pixels), config)
    np.testing.assert_array_equal(fast, slow)
    assert fast[0, 0, 0] == pytest.approx((pixels[0, 0, 0] / 255 - 0.5) / 0.25, abs=1e-6)
    squash = DataConfig(input_size=(3, 16, 24), crop_pct=1.0, crop_mode="squash")
    assert preprocess_image(pixels, squash).shape == (3, 16, 24)


def test_bad_config_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="crop_mode"):
        DataConfig(crop_mode="border")
    with pytest.raises(ValueError, match="crop_pct"):
        DataConfig(crop_pct=0.0)
