"""scripts/inspect.py, inspection.report and CharLM.activations on a tiny trained run: the folder it writes,
TensorBoard's images and text, the page in Chromium (coloured text, switching cells, a corpus of HTML and
JavaScript shown as characters), and bad input as one line that writes nothing."""

import json
import os
import sys

import numpy as np
import pytest

from helpers import (
    REPO_ROOT,
    make_config,
    run_command,
    run_script,
    script_command,
    seed_kernels,
    snapshot,
    tensorboard_events,
)
from tf_charrnn.config import InspectConfig
from tf_charrnn.errors import UserError
from tf_charrnn.inference import activations
from tf_charrnn.inspection import features, page, report
from tf_charrnn.run import layout
from tf_charrnn.training import trainer

HOSTILE = '<script>window.hacked=1</script><img src=x onerror="window.hacked=2"></span>&amp;'
LINE = 'Willing is "not (enough)"; we must do. ' + HOSTILE + "\n"
CORPUS = LINE * 12
UNITS, LAYERS = 16, 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 2 x 16 LSTM run on CORPUS, and its root folder."""
    root = tmp_path_factory.mktemp("inspect")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    settings = dict(batch_size=4, seq_length=12, embedding_dim=8, rnn_units=UNITS, num_layers=LAYERS)
    config = make_config(
        corpus,
        root / "cache",
        root / "run",
        **settings,
        dropout=0.0,
        max_steps=5,
        eval_every=5,
        sample_length=0,
    )
    trainer.train(config)
    return str(root / "run"), root


def _config(train_dir, root, **values):
    return InspectConfig(
        **{
            "train_dir": train_dir,
            "data_path": str(root / "corpus.txt"),
            "output_dir": str(root / "out"),
            **values,
        }
    )


SCRIPT_RUNS = {
    "help": ["--help"],
    "no_checkpoint": ["--train_dir={root}/bare_run", "--output_dir={root}/bad_out"],
    "unknown_characters": [
        "--train_dir={run}",
        "--data_path={root}/unknown.txt",
        "--output_dir={root}/bad_out",
    ],
    "cell_out_of_range": ["--train_dir={run}", "--data_path={root}/corpus.txt", "--output_dir={root}/bad_out"]
    + ["--cell=16"],
    "layer_out_of_range": [
        "--train_dir={run}",
        "--data_path={root}/corpus.txt",
        "--output_dir={root}/bad_out",
    ]
    + ["--layer=3"],
    "no_output_dir": ["--train_dir={run}"],
    "not_empty": ["--train_dir={run}", "--data_path={root}/corpus.txt", "--output_dir={root}/full"],
}


@pytest.fixture(scope="module")
def script_runs(trained):
    """{name: CompletedProcess} of the failing SCRIPT_RUNS (with snapshots of the root folder before and
    after them), then the good run into root/out."""
    train_dir, root = trained
    (root / "unknown.txt").write_text("Z" + CORPUS, encoding="utf-8")
    os.makedirs(root / "bare_run")
    for name in ("config.json", "vocab.json"):
        (root / "bare_run" / name).write_bytes((root / "run" / name).read_bytes())
    os.makedirs(root / "full")
    (root / "full" / "keep.txt").write_text("mine", encoding="utf-8")
    seed_kernels(root / "cache")
    before = snapshot(root)
    results = {}
    for name, arguments in SCRIPT_RUNS.items():
        arguments = [argument.format(run=train_dir, root=root) for argument in arguments]
        results[name] = run_script("inspect.py", arguments, root / "cache", timeout=300)
    after = snapshot(root)
    arguments = [f"--train_dir={train_dir}", f"--data_path={root}/corpus.txt", f"--output_dir={root}/out"]
    results["good"] = run_script("inspect.py", arguments, root / "cache", timeout=300)
    return results, before, after


def test_the_script_runs_though_its_name_is_a_standard_module(script_runs):
    results = script_runs[0]
    assert results["help"].returncode in (0, 1), results["help"].stderr  # absl exits 1 after the help
    assert "--output_dir" in results["help"].stdout and "--cell" in results["help"].stdout
    assert results["good"].returncode == 0, results["good"].stderr  # TensorFlow found the real `inspect`


def test_the_other_scripts_still_import_the_standard_inspect():
    """scripts/ is first on sys.path for every script there: `import inspect` finds scripts/inspect.py,
    which hands over the standard library's module."""
    scripts = os.path.join(REPO_ROOT, "scripts")
    code = "import inspect, sys; print(inspect.__file__); print(callable(inspect.signature))"
    result = run_command([sys.executable, "-c", code], cwd=scripts, timeout=60)
    assert result.returncode == 0, result.stderr
    path, has_signature = result.stdout.split()
    assert os.path.dirname(path) != scripts and has_signature == "True"
    helped = run_command(script_command("evaluate.py", "--helpshort"), timeout=120)
    assert helped.returncode in (0, 1) and "skip_unknown" in helped.stdout, helped.stderr


def test_the_script_writes_the_page_the_plots_and_the_ranking(trained, script_runs):
    train_dir, root = trained
    good = script_runs[0]["good"]
    assert good.returncode == 0, good.stderr
    lines = good.stdout.strip().splitlines()
    assert lines[0].startswith(f"{len(CORPUS):,} characters in ")
    assert [line.split(":")[0] for line in lines[1:]] == list(features.FEATURES)
    out = root / "out"
    assert sorted(os.listdir(out)) == sorted(
        [report.PAGE, report.SATURATION_PNG, report.ACTIVATION_PNG, report.RANKING_JSON]
    )
    for name in (report.SATURATION_PNG, report.ACTIVATION_PNG):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    record = json.loads((out / report.RANKING_JSON).read_text())
    assert record["characters"] == len(CORPUS) and record["skipped_characters"] == 0
    assert record["checkpoint"].endswith("ckpt-5")
    assert set(record["ranking"]) == set(features.FEATURES)
    for scores in record["ranking"].values():
        assert len(scores) == 5
        assert [abs(s["correlation"]) for s in scores] == sorted(
            (abs(s["correlation"]) for s in scores), reverse=True
        )
        assert all(s["state"] in ("h", "c") and 0 <= s["cell"] < UNITS for s in scores)
    assert set(record["gate_saturation"]) == {
        f"lstm_{i}/{g}" for i in (1, 2) for g in ("input", "forget", "output")
    }
    events = tensorboard_events(layout.log_dir(train_dir, report.TENSORBOARD_SPLIT))
    tags = set(events.Tags()["tensors"])
    assert {"inspect/gate_saturation", "inspect/cell_activation", "inspect/ranking"} <= tags
    (ranking_event,) = events.Tensors("inspect/ranking")
    assert ranking_event.step == 5
    assert b"| in_quote | 1 |" in ranking_event.tensor_proto.string_val[0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_checkpoint", "error: {root}/bare_run holds no checkpoint yet"),
        (
            "unknown_characters",
            "error: --data_path {root}/unknown.txt has characters outside the run's vocabulary: ['Z']; "
            "pass --skip_unknown",
        ),
        (
            "cell_out_of_range",
            "error: --cell=16 is out of range: each layer of the run has 16 cells; pass 0 to 15",
        ),
        ("layer_out_of_range", "error: --layer=3 is out of range: the run has 2 layer(s)"),
        ("no_output_dir", "error: --output_dir must name the folder"),
        ("not_empty", "error: --output_dir {root}/full is not empty; pass --overwrite"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trained, script_runs, name, message):
    root = trained[1]
    results, before, after = script_runs
    result = results[name]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(message.format(root=root)), last_line
    assert after == before
    assert not os.path.exists(root / "bad_out")


def test_skip_unknown_leaves_them_out(trained, tmp_path):
    train_dir, root = trained
    config = _config(
        train_dir,
        root,
        data_path=str(root / "unknown.txt"),
        skip_unknown=True,
        output_dir=str(tmp_path / "o"),
    )
    result = report.inspect_run(config)
    assert result.skipped_characters == 1 and result.characters == len(CORPUS)


def test_a_chosen_cell_is_shown(trained, tmp_path):
    train_dir, root = trained
    config = _config(
        train_dir, root, output_dir=str(tmp_path / "o"), layer=1, cell=3, state="h", tensorboard=False
    )
    assert report.inspect_run(config).shown == "lstm_1/h/3"
    html = (tmp_path / "o" / report.PAGE).read_text()
    assert '<option value="lstm_1/h/3">' in html


def test_the_page_data_cannot_break_out_of_its_script():
    data = page.script_json({"text": "</script><script>alert(1)</script><!-- & \u2028"})
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data) == {"text": "</script><script>alert(1)</script><!-- & \u2028"}
    assert page.scaled(np.array([0.5, -1.0, 0.0])) == [50, -100, 0] and page.scaled(np.zeros(2)) == [0, 0]


def test_the_page_in_chromium_colours_the_text_and_switches_cells(trained, script_runs, chromium):
    root = trained[1]
    from playwright.sync_api import sync_playwright

    from tf_charrnn.export.browser import CHROMIUM_FLAGS

    url = (root / "out" / report.PAGE).as_uri()
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.on("dialog", lambda dialog: errors.append(f"dialog {dialog.message}"))
            tab.goto(url)
            tab.wait_for_function("document.body.dataset.cell !== ''")
            shown = tab.evaluate(
                """() => ({
                  text: document.getElementById("text").textContent,
                  spans: document.querySelectorAll("#text span").length,
                  coloured: Array.from(document.querySelectorAll("#text span"))
                    .filter((s) => s.style.backgroundColor !== "").length,
                  hacked: window.hacked,
                  images: document.querySelectorAll("img").length,
                  scripts: document.querySelectorAll("script").length,
                  cell: document.body.dataset.cell,
                  options: Array.from(document.querySelectorAll("#cell option"), (o) => o.value),
                })"""
            )
            assert shown["text"] == CORPUS  # HTML and script in the corpus are characters on the page
            assert shown["hacked"] is None and shown["scripts"] == 2 and shown["images"] == 2
            assert shown["spans"] == len(CORPUS) and shown["coloured"] == len(CORPUS)
            assert len(shown["options"]) >= 2 and shown["cell"] == shown["options"][0]
            before = tab.evaluate(
                "Array.from(document.querySelectorAll('#text span'), (s) => s.style.backgroundColor)"
            )
            other = next(name for name in shown["options"] if name != shown["cell"])
            tab.select_option("#cell", other)
            assert tab.evaluate("document.body.dataset.cell") == other
            after = tab.evaluate(
                "Array.from(document.querySelectorAll('#text span'), (s) => s.style.backgroundColor)"
            )
            assert after != before
            button = tab.locator("button.show").nth(1)
            target = button.get_attribute("data-cell")
            button.click()
            assert tab.evaluate("document.body.dataset.cell") == target
            assert tab.locator("tr.shown").first.get_attribute("data-cell") == target
        finally:
            browser.close()
    assert errors == []


def test_charlm_activations(trained):
    import tf_charrnn

    lm = tf_charrnn.CharLM.from_run(trained[0])
    text = CORPUS[:100]
    found = lm.activations(text)
    assert found.text == text and found.streams == activations.stream_count(100, 4, 12) == 4
    assert set(found.arrays) == {f"lstm_{i}/{k}" for i in (1, 2) for k in activations.KINDS["lstm"]}
    assert found["lstm_2/c"].shape == (100, UNITS)
    one = lm.activations(text, streams=1)
    np.testing.assert_array_equal(
        one["lstm_1/h"], activations.compute_activations(lm.model, lm.vocab.encode(text), text, 1)["lstm_1/h"]
    )
    assert lm.activations("Z" + text, skip_unknown=True, streams=1).text == text
    with pytest.raises(UserError, match=r"text= has characters outside the run's vocabulary: \['Z'\]"):
        lm.activations("Z" + text)
    with pytest.raises(UserError, match="streams= must be >= 1"):
        lm.activations(text, streams=0)
    with pytest.raises(UserError, match="at least one character"):
        lm.activations("")
