"""The ``dlnest-ray`` command line (Typer). Heavy imports happen inside commands only."""
