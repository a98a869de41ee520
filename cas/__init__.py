"""cas: a content-addressed store for data directories and ML model artifacts."""

__version__ = "0.1.0"
