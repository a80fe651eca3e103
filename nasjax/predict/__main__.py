"""`python -m nasjax.predict`: the same as `nasjax predict` (nasjax.cli)."""
import sys

from nasjax.cli import main

main(["predict", *sys.argv[1:]])
