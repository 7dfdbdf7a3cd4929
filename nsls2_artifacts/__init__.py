"""nsls2-artifacts: build, ship and deploy immutable Jupyter environments for NSLS-II."""

__version__ = "0.1.0"
