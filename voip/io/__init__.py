"""The edges: sockets, files, real clocks and threads live here and nowhere else."""
