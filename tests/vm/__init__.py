"""The VM tests: one boot per kernel, one case per (kernel, sample, loader)."""
