"""Looks inside a trained run: scripts/inspect.py --train_dir=runs/shakespeare_cpu --output_dir=/tmp/inside.

Runs a text (--data_path, or the run's validation split) through the model and writes into --output_dir:
inspect.html (the text coloured by a cell, the cells that follow each text feature, a menu to switch
cells), gate_saturation.png, cell_activation.png and ranking.json; and the same figures to TensorBoard in
TRAIN_DIR/logs/inspect. Prints the best cell per feature.
"""

from tf_charrnn import files, startup
from tf_charrnn.cli import flags
from tf_charrnn.config import InspectConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.inference import scored_text
from tf_charrnn.run import layout


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(InspectConfig)
    run_config, vocab = layout.load_run(config.train_dir)
    config.chosen_cell(run_config.model)
    if config.data_path:
        corpus_files.check_names(config.data_path)
    files.check_output_folder(config.output_dir, "output_dir", config.overwrite)
    layout.check_checkpoint_present(config.train_dir, config.checkpoint, config.best)
    text_ids = scored_text.read_inspected(config, run_config, vocab)
    # Imported once the flags, the cell chosen, the run directory's files, the text, the output folder and the
    # checkpoint's files are valid: those faults are refused before TensorFlow loads (seconds).
    startup.import_tensorflow(for_command=True)
    from tf_charrnn.inspection import report
    from tf_charrnn.runtime import placement

    placement.grow_gpu_memory()
    result = report.inspect_run(config, text_ids)
    print(
        f"{result.characters:,} characters in {result.seconds:.1f} s; "
        f"{result.output_dir}/{report.PAGE} shows {result.shown}"
    )
    for feature, scores in result.ranking.items():
        best = f"{scores[0].name} r={scores[0].correlation:+.3f}" if scores else "constant over the text"
        print(f"{feature}: {best}")


def run() -> None:
    flags.define_flags(InspectConfig)
    flags.run(main)
