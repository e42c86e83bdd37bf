"""Exceptions shared across the package."""


class ParseError(ValueError):
    """Bytes from the network that do not form a valid packet; never fatal to a session."""


class VoipError(Exception):
    """A user-facing failure (bad file, bad address, port in use): printed as one line, exit 1."""
