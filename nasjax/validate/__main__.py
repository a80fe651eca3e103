"""`python -m nasjax.validate`: the same as `nasjax val` (nasjax.cli)."""
import sys

from nasjax.cli import main

main(["val", *sys.argv[1:]])
