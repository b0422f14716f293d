"""Experiments of the DIBE paper (Tables 1, 3-6, Figs. 10, 11, 14): one entry point each.

Every script is ``python -m experiments.<name> [--quick | --medium] [--out DIR]``; see
``experiments/README.md`` and each module's docstring for the command, the runtime and the
result to expect. The shared runner is :mod:`experiments.common`.
"""
