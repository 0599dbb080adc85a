"""One training engine for every model of the paper, with atomic checkpoints and resume."""
