"""`python -m nasjax.export`: the same as `nasjax export` (nasjax.cli)."""
import sys

from nasjax.cli import main

main(["export", *sys.argv[1:]])
