"""`python -m nasjax.validate`: the same as `nasjax validate` (nasjax.cli)."""
import sys

from nasjax.cli import main

main(["validate", *sys.argv[1:]])
