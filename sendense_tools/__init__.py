"""Sendense appliance tools: tunnel, hub, node and backup in one package."""

__version__ = "0.1.0"
