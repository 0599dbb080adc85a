"""Processed scene store and the data products built on it."""
