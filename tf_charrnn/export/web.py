"""The web page export: the LiteRT step model at batch 1 (LiteRT.js wants static shapes), the vocabulary,
and the static page of tf_charrnn/export/web_page/ that generates text with them in a browser, on LiteRT.js
(`@litertjs/core`, WebAssembly) copied from a local npm install (no network needed) or from a pinned CDN.
"""

import html
import json
import os
import shutil
from typing import TYPE_CHECKING

from tf_charrnn.data.vocab import Vocab
from tf_charrnn.export import litert
from tf_charrnn.export.web_runtime import CDN, LITERT_JS_VERSION, RUNTIME_DIR, RUNTIME_FILES

if TYPE_CHECKING:  # saved_model imports this module
    from tf_charrnn.export.saved_model import StepModule

PAGE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_page")
PAGE_FILES = ("app.js", "sampler.js", "style.css")
INDEX_FILE = "index.html"


def _runtime_urls(local: bool) -> tuple[str, str]:
    """(the import map, the WebAssembly folder) of the page: files copied under RUNTIME_DIR, or the CDN's."""
    if local:
        base = {package: f"./{RUNTIME_DIR}/{package}" for package in RUNTIME_FILES}
    else:
        base = {package: f"{CDN}/{package}@{LITERT_JS_VERSION}" for package in RUNTIME_FILES}
    imports = {package: f"{url}/dist/index.js" for package, url in base.items()}
    return json.dumps({"imports": imports}), f"{base['@litertjs/core']}/wasm/"


def _default_prime(vocab: Vocab) -> str:
    """A letter of the vocabulary (an upper-case one if it has any) to start from; a textarea drops a
    leading newline, so not the run's "\\n"."""
    letters = [char for char in vocab.chars if char.isalpha()]
    return next((char for char in letters if char.isupper()), letters[0] if letters else vocab.chars[0])


def write_page(
    folder: str,
    step_module: "StepModule",
    vocab: Vocab,
    quantize: str,
    runtime_dir: str = "",
    title: str = "Char-RNN",
) -> None:
    """Writes the page into `folder`: index.html, its script and style, model.tflite (the batch-1 step,
    see litert.convert) and vocab.json, and, with `runtime_dir`, LiteRT.js's files under litert/.

    Args:
      folder: an empty folder.
      step_module: export.StepModule with batch_size=1.
      vocab: the run's Vocab.
      quantize: the model's weights, "none", "float16" or "int8".
      runtime_dir: a node_modules folder that passed `web_runtime.check_runtime`; empty: the page loads
        LiteRT.js LITERT_JS_VERSION from the jsDelivr CDN.
      title: the page's title (the run's name).
    """
    litert.write_model(folder, step_module, vocab, quantize)
    for name in PAGE_FILES:
        shutil.copyfile(os.path.join(PAGE_SOURCE, name), os.path.join(folder, name))
    for package, names in RUNTIME_FILES.items() if runtime_dir else ():
        for name in names:
            target = os.path.join(folder, RUNTIME_DIR, package, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(runtime_dir, package, name), target)
    import_map, wasm_dir = _runtime_urls(bool(runtime_dir))
    with open(os.path.join(PAGE_SOURCE, INDEX_FILE), encoding="utf-8") as f:
        page = f.read()
    values = {
        "TITLE": html.escape(title),
        "IMPORT_MAP": import_map,
        "LITERT_WASM": html.escape(wasm_dir),
        "LITERT_JS_VERSION": LITERT_JS_VERSION,
        "QUANTIZE": {"none": "float32", "float16": "float16", "int8": "int8"}[quantize],
        "PRIME": html.escape(_default_prime(vocab)),
    }
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", value)
    with open(os.path.join(folder, INDEX_FILE), "w", encoding="utf-8") as f:
        f.write(page)
