"""Optimisation algorithms (OLGA, EF-OLGA and baselines) as round-by-round state machines.

Planned (issue "Optimization core"): each algorithm is written once over a block of workers and talks
to them only through :mod:`lit_commeff.transport`, so the simulator and the cluster run the same code.
"""
