"""Exceptions shared across the package."""


class ParseError(ValueError):
    """Bytes from the network that do not form a valid packet; never fatal to a session."""


class CodecError(ValueError):
    """libopus rejected a packet or a setting (here, not in voip.codec, so that the program can
    catch it without loading numpy and libopus first)."""


class VoipError(Exception):
    """A user-facing failure (bad file, bad address, port in use): printed as one line, exit 1."""


class DeviceGone(VoipError):
    """An audio device stopped mid-stream. PortAudio's threads for it may never return, so
    the process must exit without closing the stream (closing would wait for them forever)."""
