"""Loaders: the Python loader in-process, and programs that speak the loader protocol."""
