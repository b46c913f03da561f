"""Web export: the page runs the batch-1 LiteRT step on LiteRT.js in a real headless Chromium (the
system's, driven by Playwright), served from 127.0.0.1 with every other host refused. Greedy text equals
sample.py's (float32) and the LiteRT Python example's (int8); the seeded sampler repeats across reloads;
Stop stops; the chart holds the softmax of the step's logits; a bad prime is named on the page."""

import importlib.util
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO_ROOT, run_script, train_tiny_run
from tf_charrnn.errors import UserError
from tf_charrnn.export import browser, litert, saved_model
from tf_charrnn.export.web_runtime import LITERT_JS_VERSION, RUNTIME_FILES
from tf_charrnn.inference import sampling
from tf_charrnn.inference.charlm import CharLM

EXAMPLE = os.path.join(REPO_ROOT, "examples", "litert_generate.py")
PRIME = "Willing "


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained LSTM run, wide enough (H=64) that int8 quantizes its weight matrices."""
    return train_tiny_run(tmp_path_factory.mktemp("web"), embedding_dim=16, rnn_units=64)


@pytest.fixture(scope="module")
def pages(run_dir, web_runtime, tmp_path_factory):
    """{quantize: web export folder} with LiteRT.js copied in from web/node_modules (`npm ci` in web/)."""
    root = tmp_path_factory.mktemp("web_exports")
    return {
        quantize: saved_model.export_run(
            run_dir, str(root / quantize), format="web", quantize=quantize, web_runtime_dir=web_runtime
        )
        for quantize in ("none", "int8")
    }


def _assert_offline_and_clean(page):
    """The page asked for nothing off 127.0.0.1 (it works with no network) and logged no error."""
    assert page.refused == [], page.refused
    assert page.errors == [], page.errors


@pytest.fixture(scope="module")
def playwright(chromium):
    """One Playwright for the module's pages (its sync API allows one per thread)."""
    del chromium  # installed, or the page tests skip saying so
    with browser.start_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def int8_page(pages, playwright):
    with browser.open_page(pages["int8"], playwright=playwright) as page:
        yield page
        _assert_offline_and_clean(page)


@pytest.fixture(scope="module")
def float32_page(pages, playwright):
    with browser.open_page(pages["none"], playwright=playwright) as page:
        yield page
        _assert_offline_and_clean(page)


@pytest.fixture(scope="module")
def example():
    """examples/litert_generate.py as a module."""
    spec = importlib.util.spec_from_file_location("litert_generate", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keras_logits(run_dir, text):
    """The Keras model's float64 logits [V] after stepping through `text` from a zero state."""
    sampler, vocab = sampling.load_sampler(run_dir, fused_kernels=False)
    states = sampler.model.initial_state(1)
    for char_id in vocab.encode(text):
        logits, states = sampler.model.step(tf.constant([char_id]), states)
    return logits.numpy()[0].astype(np.float64), vocab


def _distribution(logits, temperature=1.0, top_k=0):
    logits = logits / temperature
    if top_k:
        logits = np.where(logits < np.sort(logits)[-top_k], -np.inf, logits)
    probabilities = np.exp(logits - logits.max())
    return probabilities / probabilities.sum()


def test_export_writes_a_static_page_with_a_batch_1_model(pages, run_dir):
    folder = pages["int8"]
    files = sorted(
        os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
    )
    runtime = [f"litert/{package}/{name}" for package, names in RUNTIME_FILES.items() for name in names]
    assert files == sorted(
        ["index.html", "app.js", "sampler.js", "style.css", "model.tflite", "vocab.json", *runtime]
    )
    index = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
    assert (
        "cdn.jsdelivr" not in index and '"@litertjs/core": "./litert/@litertjs/core/dist/index.js"' in index
    )
    runner = litert.step_runner(os.path.join(folder, litert.MODEL_FILE))
    inputs = runner.get_input_details()
    assert list(inputs["ids"]["shape_signature"]) == [1]  # static: LiteRT.js wants static shapes
    assert list(inputs["states"]["shape_signature"]) == [2, 2, 1, 64]
    sizes = {
        quantize: os.path.getsize(os.path.join(path, litert.MODEL_FILE)) for quantize, path in pages.items()
    }
    assert sizes["int8"] <= 0.4 * sizes["none"], sizes


def test_without_a_runtime_dir_the_page_loads_the_pinned_runtime_from_the_cdn(run_dir, tmp_path):
    folder = saved_model.export_run(run_dir, str(tmp_path / "cdn"), format="web")
    assert not os.path.exists(os.path.join(folder, "litert"))
    index = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
    pinned = f"https://cdn.jsdelivr.net/npm/@litertjs/core@{LITERT_JS_VERSION}"
    assert (
        f'"@litertjs/core": "{pinned}/dist/index.js"' in index
        and f'data-litert-wasm="{pinned}/wasm/"' in index
    )
    assert "weights int8" in index  # --quantize=auto: int8 for the web


def test_a_runtime_dir_without_the_pinned_litert_js_is_refused(run_dir, web_runtime, tmp_path):
    fake = tmp_path / "node_modules"
    shutil.copytree(web_runtime, fake, ignore=shutil.ignore_patterns("*.wasm"))
    with pytest.raises(
        UserError, match=r"has no @litertjs/core/wasm/litert_wasm_internal.wasm; run `npm ci`"
    ):
        saved_model.export_run(run_dir, str(tmp_path / "a"), format="web", web_runtime_dir=str(fake))
    shutil.rmtree(fake)
    shutil.copytree(web_runtime, fake)
    package = fake / "@litertjs" / "core" / "package.json"
    package.write_text(json.dumps({**json.loads(package.read_text()), "version": "9.9.9"}))
    with pytest.raises(
        UserError, match=rf"holds @litertjs/core 9.9.9, the page is written for {LITERT_JS_VERSION}"
    ):
        saved_model.export_run(run_dir, str(tmp_path / "b"), format="web", web_runtime_dir=str(fake))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_web_package_json_pins_the_runtime_the_page_is_written_for():
    with open(os.path.join(REPO_ROOT, "web", "package.json"), encoding="utf-8") as f:
        assert json.load(f)["dependencies"] == {"@litertjs/core": LITERT_JS_VERSION}
    with open(os.path.join(REPO_ROOT, "web", "package-lock.json"), encoding="utf-8") as f:
        locked = json.load(f)["packages"]
    assert locked["node_modules/@litertjs/core"]["version"] == LITERT_JS_VERSION
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert "apt-get install -y chromium" in ci and "npm ci --prefix web" in ci


@pytest.mark.slow
def test_float32_page_greedy_text_equals_sample_py(float32_page, run_dir, tmp_path):
    result = float32_page.generate(prime=PRIME, length=200, sampling="greedy")
    assert (result.state, result.generated, result.error) == ("done", 200, "")
    sampled = run_script(
        "sample.py",
        [f"--train_dir={run_dir}", f"--prime={PRIME}", "--length=200", "--sampling=greedy"],
        tmp_path / "cache",
        timeout=300,
    )
    assert sampled.returncode == 0, sampled.stderr
    assert result.text + "\n" == sampled.stdout
    assert result.chars_per_second > 0


def test_int8_page_greedy_text_equals_the_litert_example(int8_page, pages, example):
    result = int8_page.generate(prime=PRIME, length=200, sampling="greedy")
    want = "".join(example.CharModel(pages["int8"]).generate(PRIME, 200, None, greedy=True))
    assert result.text == PRIME + want and result.generated == 200


def test_seeded_sampling_repeats_across_reloads_and_top_k_1_is_greedy(int8_page):
    settings = dict(prime=PRIME, length=120, sampling="sample", temperature=1.5, top_k=0)
    first = int8_page.generate(seed=3, **settings).text
    int8_page.load()
    assert int8_page.generate(seed=3, **settings).text == first
    assert int8_page.generate(seed=4, **settings).text != first
    greedy = int8_page.generate(prime=PRIME, length=120, sampling="greedy").text
    assert int8_page.generate(seed=5, **{**settings, "top_k": 1}).text == greedy


def test_stop_and_escape_stop_generating(int8_page):
    for stop in (lambda: int8_page.page.click("#stop"), lambda: int8_page.page.keyboard.press("Escape")):
        int8_page.start(prime=PRIME, length=100_000, sampling="sample", seed=1)
        int8_page.page.wait_for_function("Number(document.getElementById('speed').dataset.generated) > 0")
        stop()
        result = int8_page.wait()
        assert result.state == "stopped" and 0 < result.generated < 100_000, result.state
        assert len(result.text) == len(PRIME) + result.generated
        assert int8_page.page.is_disabled("#stop") and int8_page.page.is_enabled("#generate")


@pytest.mark.parametrize("temperature, top_k, length", [(1.0, 0, 0), (0.7, 5, 7)])
def test_chart_holds_the_softmax_of_the_steps_logits(float32_page, run_dir, temperature, top_k, length):
    result = float32_page.generate(
        prime=PRIME, length=length, sampling="sample", temperature=temperature, top_k=top_k, seed=2
    )
    logits, vocab = _keras_logits(run_dir, result.text)  # the prime and what followed it
    want = _distribution(logits, temperature, top_k)
    assert len(result.chart) == 10
    for char, probability in result.chart:
        assert probability == pytest.approx(want[vocab.encode(char)[0]], abs=1e-5), char
    got = [probability for _, probability in result.chart]
    assert got == sorted(got, reverse=True) and got[0] == pytest.approx(want.max(), abs=1e-5)
    assert sum(p > 0 for p in got) == (top_k or 10)


def test_the_page_colours_generated_text_by_a_cell(float32_page, run_dir):
    """The switch colours each generated character by a cell's value in the step's state after it: the
    value CharLM.activations gives for that character of the same text."""
    tab = float32_page.page
    assert tab.evaluate(
        "Array.from(document.querySelectorAll('#colour_layer option'), (o) => o.textContent)"
    ) == [
        "1",
        "2",
    ]
    assert tab.evaluate(
        "Array.from(document.querySelectorAll('#colour_state option'), (o) => o.textContent)"
    ) == [
        "h",
        "c",
    ]
    assert tab.get_attribute("#colour_cell", "max") == "63"
    tab.check("#colour")
    tab.select_option("#colour_layer", value="2")
    try:
        for name in ("c", "h"):
            tab.select_option("#colour_state", value=name)
            tab.fill("#colour_cell", "5")
            result = float32_page.generate(prime=PRIME, length=40, sampling="greedy")
            assert (result.state, result.generated) == ("done", 40)
            spans = tab.evaluate(
                """Array.from(document.querySelectorAll('#output span'),
                              (s) => [s.textContent, Number(s.dataset.value), s.style.backgroundColor])"""
            )
            assert "".join(char for char, _, _ in spans) == result.text[len(PRIME) :]
            assert all(colour.startswith("rgb") for _, _, colour in spans)  # rgba, or rgb at alpha 1
            want = CharLM.from_run(run_dir).activations(result.text, streams=1)[f"lstm_2/{name}"][:, 5]
            np.testing.assert_allclose([value for _, value, _ in spans], want[len(PRIME) :], atol=1e-4)
        tab.fill("#colour_cell", "64")  # out of range: the form refuses to generate
        assert tab.evaluate("document.getElementById('colour_cell').checkValidity()") is False
    finally:
        tab.fill("#colour_cell", "0")
        tab.uncheck("#colour")
    assert float32_page.generate(prime=PRIME, length=5, sampling="greedy").state == "done"
    assert tab.evaluate("document.querySelectorAll('#output span').length") == 0


def test_prime_outside_the_vocabulary_is_named_on_the_page(int8_page):
    result = int8_page.generate(prime="Zebra€", length=20, sampling="greedy")
    assert result.state == "ready" and not result.text.startswith("Zebra")  # nothing generated
    assert result.error == (
        'The prime has characters outside the model\'s vocabulary: "Z", "b", "r", "€". Remove them.'
    )
    assert int8_page.generate(prime=PRIME, length=20, sampling="greedy").state == "done"  # still works
    assert not int8_page.page.is_visible("#error")


def test_page_works_by_keyboard_on_a_phone_width_screen(pages, playwright):
    with browser.open_page(pages["int8"], width=390, height=800, playwright=playwright) as page:
        assert page.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        output, chart = (
            page.page.locator("#output").bounding_box(),
            page.page.locator("#chart").bounding_box(),
        )
        assert chart["y"] >= output["y"] + output["height"]  # one column: the chart under the text
        page.page.check("input[value=greedy]")
        page.page.fill("#length", "30")
        page.page.focus("#prime")
        page.page.keyboard.press("Control+a")
        page.page.keyboard.type(PRIME)
        page.page.keyboard.press("Control+Enter")
        result = page.wait()
        assert result.state == "done" and result.text.startswith(PRIME) and result.generated == 30
        page.page.focus("#length")
        page.page.keyboard.press("Enter")  # Enter in a field submits the form
        assert page.wait().generated == 30
        _assert_offline_and_clean(page)


@pytest.mark.slow
def test_webpage_script_prints_the_text_and_speed_and_writes_a_screenshot(pages, chromium, tmp_path):
    screenshot = tmp_path / "page.png"
    args = [f"--export_dir={pages['int8']}", f"--prime={PRIME}", "--length=80", "--sampling=greedy"]
    result = run_script("webpage.py", [*args, f"--screenshot={screenshot}"], tmp_path / "cache", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(PRIME) and len(result.stdout) == len(PRIME) + 80 + 1
    assert "chars/s (batch 1, LiteRT.js WebAssembly in headless Chromium)" in result.stderr.splitlines()[-1]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = run_script("webpage.py", [*args[:1], "--prime=Zebra"], tmp_path / "cache", timeout=300)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --prime: the page says: The prime has characters outside the model's vocabulary: "
        '"Z", "b", "r". Remove them.'
    )


SAMPLER_CHECK = r"""
import {argmax, drawIndex, nextCharProbabilities, seededRandom, topEntries} from "%s";
const random = seededRandom(7), again = seededRandom(7);
const draws = Array.from({length: 5}, () => random());
console.log(JSON.stringify({
  argmax: argmax([1, 3, 3, 2]),
  top2: Array.from(nextCharProbabilities([0, 3, 1, 3, 2], 1, 2)),
  ties: Array.from(nextCharProbabilities([1, 2, 2, 0], 1, 1)),
  hot: Array.from(nextCharProbabilities([0, Math.log(3)], 0.5)),
  draws, again: Array.from({length: 5}, () => again()),
  picks: [0, 0.2, 0.25, 0.99].map((u) => drawIndex([0.25, 0, 0.5, 0.25], u)),
  top: topEntries([0.1, 0.4, 0.1, 0.4], 3),
}));
"""


def test_page_sampler_is_seeded_and_masks_all_but_the_top_k():
    sampler = os.path.join(REPO_ROOT, "tf_charrnn", "export", "web_page", "sampler.js")
    check = SAMPLER_CHECK % sampler
    out = subprocess.run(
        ["node", "--input-type=module", "-e", check], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["argmax"] == 1  # the first of the tied largest, as numpy and TensorFlow
    np.testing.assert_allclose(got["top2"], [0, 0.5, 0, 0.5, 0], atol=1e-15)
    np.testing.assert_allclose(got["ties"], [0, 0.5, 0.5, 0], atol=1e-15)  # ties with the k-th stay
    np.testing.assert_allclose(got["hot"], [0.1, 0.9], atol=1e-15)  # softmax([0, ln 3] / 0.5)
    assert (
        got["draws"] == got["again"] and len(set(got["draws"])) == 5 and all(0 <= u < 1 for u in got["draws"])
    )
    assert got["picks"] == [0, 0, 2, 3]
    assert got["top"] == [[1, 0.4], [3, 0.4], [0, 0.1]]
