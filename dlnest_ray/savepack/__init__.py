"""Save packages: creation, checkpoint tracks, atomic checkpoint I/O, metrics."""
