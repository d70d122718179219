"""Hostile inputs through the real entry points, one table per command (``world.py`` runs them)."""
