"""Errors a user can cause and fix. The CLI prints them as one line, never a traceback."""

from enum import IntEnum


class ExitCode(IntEnum):
    """The `alliance` command's exit status, by class of failure (docs/client-protocol.md)."""

    OK = 0
    ERROR = 1  # configuration, local files, storage: the message says what to fix
    USAGE = 2  # a wrong command line
    UNREACHABLE = 3  # no node answered at the address
    REFUSED = 4  # the node answered with an error
    NOT_FOUND = 5  # the block, transaction or record asked for does not exist
    VERIFICATION_FAILED = 6  # a proof or a stored chain did not verify
    DENIED = 7  # the node refused access (HTTP 401/403): no token, an unknown one, or one without the role


class AllianceError(Exception):
    """A mistake in input, configuration or environment, explained in one line."""

    exit_code = ExitCode.ERROR


class ConfigError(AllianceError):
    """node.toml or genesis.toml is missing or invalid."""


class KeyFileError(AllianceError):
    """A key file is missing, malformed or too widely readable."""


class VerificationFailed(AllianceError):
    """A proof or a stored chain did not verify; the message names the first fault."""

    exit_code = ExitCode.VERIFICATION_FAILED
