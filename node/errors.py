"""Errors a user can cause and fix. The CLI prints them as one line, never a traceback."""


class AllianceError(Exception):
    """A mistake in input, configuration or environment, explained in one line."""


class ConfigError(AllianceError):
    """node.toml or genesis.toml is missing or invalid."""


class KeyFileError(AllianceError):
    """A key file is missing, malformed or too widely readable."""
