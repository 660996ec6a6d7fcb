"""Hydra configuration tree of lit-commeff (``conf/`` at the repository root links here)."""
