"""Pure scheduling: task specs and GPU snapshots in, launch/wait decisions out (no Ray, NVML or clock)."""
