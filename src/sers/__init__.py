"""SERS: self-evolving pseudo-rehearsal with task similarity, as a composable library.

One module per idea of the method (see ../../README.md for the map); none of them knows Snakemake.
"""

__version__ = "0.1.0"
