"""Ray actors (center, run supervisors, device monitors) and the one way to reach the center."""
