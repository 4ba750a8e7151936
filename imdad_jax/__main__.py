"""``python -m imdad_jax train|score``: the command line of :mod:`imdad_jax.cli`."""
import sys

from imdad_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
