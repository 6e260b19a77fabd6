"""The command line: click parses and prints; the work is in the library packages.

``edge.cli:main`` is the console entry point (setup.cfg); the command tree is built in :mod:`edge.cli.app`.
"""

from edge.cli.app import main

__all__ = ["main"]
