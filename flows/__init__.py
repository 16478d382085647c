"""Prefect flows that drive the DVC stages (scheduled and on-change runs) live here."""
