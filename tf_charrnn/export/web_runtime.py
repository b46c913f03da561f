"""The LiteRT.js runtime a web page export loads: the pinned release, the files of it the page copies from
a local npm install, and the check of such a folder (no TensorFlow: export.py runs it before TensorFlow
loads)."""

import json
import os

from tf_charrnn.errors import UserError, flag

# The LiteRT.js release the page is written and tested for (web/package.json pins the same).
LITERT_JS_VERSION = "2.5.3"
CDN = "https://cdn.jsdelivr.net/npm"
RUNTIME_DIR = "litert"
# What the page loads of each package: its ES module, and LiteRT.js's single-threaded WebAssembly builds
# (relaxed SIMD, and "compat" for browsers without it; the threaded build needs cross-origin isolation,
# which static hosts do not give).
RUNTIME_FILES = {
    "@litertjs/core": (
        "package.json",
        "dist/index.js",
        "wasm/litert_wasm_internal.js",
        "wasm/litert_wasm_internal.wasm",
        "wasm/litert_wasm_compat_internal.js",
        "wasm/litert_wasm_compat_internal.wasm",
    ),
    "@litertjs/wasm-utils": ("package.json", "dist/index.js"),
}


def check_runtime(node_modules: str) -> None:
    """Refuses a `node_modules` folder without LITERT_JS_VERSION of the runtime packages' files.

    Raises:
      UserError: a file is missing or the version differs; the message names the fix.
    """
    fix = f"run `npm ci` in the repository's web/ folder (it pins @litertjs/core {LITERT_JS_VERSION})"
    for package, names in RUNTIME_FILES.items():
        folder = os.path.join(node_modules, package)
        missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise UserError(f"{flag('web_runtime_dir')} {node_modules} has no {package}/{missing[0]}; {fix}")
        with open(os.path.join(folder, "package.json"), encoding="utf-8") as f:
            version = json.load(f).get("version")
        if version != LITERT_JS_VERSION:
            raise UserError(
                f"{flag('web_runtime_dir')} {node_modules} holds {package} {version}, the page is written "
                f"for {LITERT_JS_VERSION}; {fix}"
            )
