"""Exceptions that carry a one-line message for a person."""


class SendenseError(Exception):
    """A failure the CLI reports as one line and exit status 1."""


class ConfigError(SendenseError):
    """A configuration file or secret that cannot be used."""
