"""Errors raised for bad input; each message names the file and what to do."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Input data is missing, malformed or inconsistent."""

    def __init__(self, path: str | Path, problem: str, fix: str = ""):
        self.path = str(path)
        message = f"{self.path}: {problem}"
        if fix:
            message += f" — {fix}"
        super().__init__(message)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite; the message names the run, the step and the setting to lower."""
