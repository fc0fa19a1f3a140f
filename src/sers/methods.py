"""What each method name of `methods:` rehearses or regularises: the families the DAG wires by.

The rules (which jobs a method needs) and the cost estimate (`benchmarks/paper_cost.py`) both read
these sets, so a new method is described once. docs/configuration.md (Methods) says the same in words.
"""
from __future__ import annotations

# pseudo inputs by masked span infilling (SERS, METHOD.md §1) or by in-context generation (SSR)
MASK_METHODS = frozenset({"sers", "sers-noreg", "sers-nose", "sers-anchor", "sers-sum"})
ICL_METHODS = frozenset({"ssr", "sers-icl"})
PSEUDO_METHODS = MASK_METHODS | ICL_METHODS  # rehearse selected, labelled pseudo rows
# λ from the task similarity (a `task_similarity` job per later stage)
PENALTY_METHODS = frozenset({"sers", "sers-nose", "sers-icl", "sers-anchor", "sers-sum"})
# the penalty's form: (anchor, reduction); λ(W) × similarity.variant_scale for the variants
PENALTY_VARIANTS = {"sers-anchor": ("previous", "sum"), "sers-sum": ("zero", "sum")}
NO_EVOLUTION_METHODS = frozenset({"ssr", "sers-nose"})  # plain θt labels (SSR's refinement)
# regularisation / architecture baselines: no rehearsal, a term of their own (config `baselines.<method>`)
BASELINE_METHODS = frozenset({"ewc", "l2", "lwf", "olora"})
KMEANS_REPLAY_METHODS = frozenset({"replay-kmeans"})  # real rows chosen by k-means (SSR's KMeansSel)
REAL_REPLAY_METHODS = frozenset({"replay"}) | KMEANS_REPLAY_METHODS  # max_replay_rows real rows per earlier task
