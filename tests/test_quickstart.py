"""examples/quickstart.ipynb: it runs top to bottom in a Jupyter kernel (on a short text and a tiny model,
which its first cell takes from QUICKSTART_CORPUS), and it is saved with the outputs of a real run."""

import os
import string

import nbclient
import nbformat
import pytest

from helpers import QUOTE, REPO_ROOT, seed_kernels

NOTEBOOK = os.path.join(REPO_ROOT, "examples", "quickstart.ipynb")


def _text(output):
    return output.get("text", "") or output.get("data", {}).get("text/plain", "")


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path, corpus_cache, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("ROMEO: " + QUOTE + "\nJULIET: " + string.ascii_letters + " ,.;:!?'-\n") * 30)
    seed_kernels(corpus_cache)
    monkeypatch.setenv("QUICKSTART_CORPUS", str(corpus))
    monkeypatch.setenv("TF_CHARRNN_CACHE", corpus_cache)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    printed = ["".join(_text(output) for output in cell.outputs) for cell in code]
    train, loaded, generated, streamed, scored, next_chars, plotted = printed[1:]
    assert "step 12 in" in train and "12/12" in train and "val_loss" in train
    assert os.path.isfile(tmp_path / "runs" / "quickstart" / "checkpoints" / "ckpt-12.index")
    assert loaded.startswith("CharLM(") and generated.startswith("ROMEO:") and streamed.startswith("JULIET:")
    assert scored.count("bits/char") == 2 and len(next_chars.splitlines()) == 5
    assert any("image/png" in output.get("data", {}) for output in code[-1].outputs)


def test_quickstart_is_saved_with_the_outputs_of_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert all(cell.outputs for cell in code[1:])  # the first cell only sets things up
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    train = "".join(_text(output) for output in code[1].outputs)
    assert "step 450 in" in train and "\r" not in train
