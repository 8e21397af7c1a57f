"""Images in, preprocessed float tensors out: sources, preprocessing, calibration sets."""
