"""Evaluation of predictions: semantic segmentation metrics and ScanNet200 benchmark files."""
