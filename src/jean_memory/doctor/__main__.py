"""`python -m jean_memory.doctor URL` works before the main CLI wires the subcommand."""

import sys

from jean_memory.doctor.cli import main

raise SystemExit(main(sys.argv[1:]))
