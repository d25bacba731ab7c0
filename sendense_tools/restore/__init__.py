"""Restore: a restore point back into vCenter as a new VM."""
