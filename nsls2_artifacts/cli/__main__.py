"""`python -m nsls2_artifacts.cli` runs the command line (used by tests and the hook)."""

from . import main

main()
