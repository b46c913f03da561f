"""Reproduces a paper's table: scripts/reproduce.py --table=karpathy2015 --corpus=FILE --out_dir=DIR
[--cells=lstm,gru,rnn] [--layers=1,2,3] [--sizes=UNITS,...] [--max_steps=N].

Each cell is a run directory under --out_dir, trained with the --protocol flagfile's settings; re-running
the same command continues an interrupted cell and reads finished ones back. At the end --out_dir holds
table.md (ours beside the paper's) and table.png.
"""

import os
import sys

from absl import logging

from tf_charrnn import files, startup
from tf_charrnn.cli import flags
from tf_charrnn.config import ReproduceConfig, RunConfig
from tf_charrnn.errors import UserError, flag


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(ReproduceConfig)
    if not os.path.isfile(config.protocol):
        raise UserError(f"{flag('protocol')}={config.protocol} is no file; pass the protocol's flagfile")
    protocol = flags.read_flagfile(config.protocol, RunConfig)
    startup.import_tensorflow(for_command=True)
    from tf_charrnn.reproduction import grid, paper, table

    try:
        results = grid.run_grid(config, protocol)
    except grid.GridStopped as stopped:
        sys.exit(128 + stopped.signal_number)
    cells = grid.grid_cells(config)
    paper_table = paper.TABLES[config.table]
    markdown = table.markdown_table(paper_table, cells, results)
    files.write_atomic(os.path.join(config.out_dir, "table.md"), markdown)
    table.plot(paper_table, cells, results, os.path.join(config.out_dir, "table.png"))
    logging.info("Wrote %s", os.path.join(config.out_dir, "table.md"))
    print(markdown)


def run() -> None:
    flags.define_flags(ReproduceConfig)
    flags.run(main)
