"""lgseg: a reproducible ScanNet200 pipeline for language-grounded indoor 3D semantic segmentation."""

__version__ = "0.1.0"
