"""voip: real-time voice over UDP (Opus over RTP, adaptive jitter buffer).

The package root holds the pure core (no sockets, threads, clocks or devices);
`voip.io` holds the edges and `voip.cli` the command line.
"""

__version__ = "0.1.0"

SAMPLE_RATE = 48000
"""Every PCM buffer in the core is mono float32 at this rate (RFC 7587: Opus RTP clock is 48 kHz)."""
