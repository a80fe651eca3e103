"""`python -m nasjax` is the `nasjax` command."""
from nasjax.cli import main

main()
