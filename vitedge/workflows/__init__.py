"""Workflows that run artifacts end to end: parity, sensitivity, the int8 budget, calibration
sweeps, the pipeline behind `vitedge run`, the study, their recipes and reports. The layer
above targets (docs/design.md): it may use every layer below, none of them uses it."""
