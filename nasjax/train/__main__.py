"""`python -m nasjax.train`: the same as `nasjax train` (nasjax.cli)."""
import sys

from nasjax.cli import main

main(["train", *sys.argv[1:]])
