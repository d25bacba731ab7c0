"""Backup policies: which VMs, when, how often a full, and how many points to keep."""
