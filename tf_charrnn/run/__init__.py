"""The run directory: its files, the checks that it fits a run, its lock and its checkpoints."""
