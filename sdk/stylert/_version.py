"""stylert's version: read by `stylert.__version__`, the CLI, engine metadata and setup.py. Imports nothing."""
__version__ = "0.1.0"
