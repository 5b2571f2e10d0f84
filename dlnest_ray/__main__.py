"""``python -m dlnest_ray`` is the ``dlnest-ray`` command."""

from .cli.app import main

main()
