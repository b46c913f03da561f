"""Reproducing a published table: the grid of runs, the n-gram baseline, the paper's figures and the
table and plot beside them."""
