"""Raw ScanNet: file formats, label map, official splits, demo scenes."""
