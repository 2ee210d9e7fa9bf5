"""``python -m raynerf.cli``: the same as the ``raynerf`` command."""

from raynerf.cli import main

main(prog_name="raynerf")
