"""`python -m nasjax.converters SRC -o OUT_DIR [--form ...]`: the same as `nasjax convert` (nasjax/cli.py).

The readers in this package parse weight files without torch and without running code from them; the
conversion into a checkpoint folder is `nasjax.loading.convert`.
"""
import sys

from nasjax.cli import main

if __name__ == "__main__":
    main(["convert", *sys.argv[1:]])
