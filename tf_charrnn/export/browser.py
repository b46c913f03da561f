"""Drives a web export (see web.py) in headless Chromium through Playwright: serves its folder on
127.0.0.1, refuses every request for another host (the page must need no network), sets the page's
controls, generates, and reads back the text, the chart and the speed. Used by scripts/webpage.py and
the tests; Playwright (`pip install playwright`) drives the system's Chromium, it downloads no browser.
"""

import contextlib
import dataclasses
import functools
import http.server
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from tf_charrnn.errors import UserError, flag

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOAD_TIMEOUT_MS = 120_000
# LiteRT.js's own log lines, which its WebAssembly runtime writes to the console's error stream.
_RUNTIME_LOG = re.compile(r"^(INFO|WARNING): ")


@dataclasses.dataclass(frozen=True)
class PageResult:
    """What the page shows after generating.

    text: the prime and the characters generated after it.
    generated: how many characters were generated.
    chars_per_second: the page's speed figure (characters generated over the seconds from the prime's
      first step to the last step).
    chart: [(character, probability)] of the chart, most likely first.
    state: "done", "stopped" (or "ready" when the page refused the settings).
    error: the page's error line, "" when none.
    """

    text: str
    generated: int
    chars_per_second: float
    chart: list
    state: str
    error: str


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextlib.contextmanager
def serve(folder: str) -> Iterator[str]:
    """Serves `folder` over HTTP on 127.0.0.1 (a free port) in a thread; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class WebPage:
    """The page of a web export, open in headless Chromium; see `open_page`.

    refused: the URLs the page asked for on other hosts (refused: the test of "no network").
    errors: uncaught JavaScript errors and console errors of the page.
    """

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.refused: list[str] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.route("**/*", self._only_this_host)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not _RUNTIME_LOG.match(message.text):
            self.errors.append(message.text)

    def _only_this_host(self, route: Any) -> None:
        if route.request.url.startswith(self.url):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")

    def load(self) -> None:
        """(Re)loads the page and waits for the model; UserError with the page's message if it fails."""
        self.page.goto(self.url)
        self.page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=LOAD_TIMEOUT_MS)
        if self.state() == "error":
            raise UserError(f"the page at {self.url} could not load its model: {self.error()}")

    def state(self) -> str:
        return self.page.evaluate("document.body.dataset.state")

    def error(self) -> str:
        return self.page.inner_text("#error") if self.page.is_visible("#error") else ""

    def set_controls(
        self,
        prime: str | None = None,
        length: int = 500,
        sampling: str = "sample",
        temperature: float = 0.8,
        top_k: int = 0,
        seed: int = 0,
    ) -> None:
        """Sets the controls (prime None: the page's own) as a person would."""
        if prime is not None:
            self.page.fill("#prime", prime)
        self.page.check(f"input[name=mode][value={sampling}]")
        if sampling == "sample":
            self.page.fill("#temperature", str(temperature))
            self.page.fill("#top_k", str(top_k))
            self.page.fill("#seed", str(seed))
        self.page.fill("#length", str(length))

    def start(self, **controls: Any) -> None:
        """Sets the controls and presses Generate, without waiting for the end."""
        self.set_controls(**controls)
        self.page.click("#generate")

    def wait(self, timeout_ms: int = LOAD_TIMEOUT_MS) -> PageResult:
        """Waits until the page is no longer generating; its PageResult."""
        self.page.wait_for_function("document.body.dataset.state !== 'running'", timeout=timeout_ms)
        return self.result()

    def generate(self, **controls: Any) -> PageResult:
        """Sets the controls, presses Generate, waits for the end: the PageResult."""
        self.start(**controls)
        return self.wait()

    def result(self) -> PageResult:
        values = self.page.evaluate(
            """() => ({
              text: document.getElementById("output").textContent,
              generated: Number(document.getElementById("speed").dataset.generated || 0),
              rate: Number(document.getElementById("speed").dataset.charsPerSecond || 0),
              chart: Array.from(document.querySelectorAll("#chart li"),
                                (li) => [li.dataset.char, Number(li.dataset.probability)]),
              state: document.body.dataset.state,
            })"""
        )
        chart = [(char, probability) for char, probability in values["chart"]]
        return PageResult(
            values["text"], values["generated"], values["rate"], chart, values["state"], self.error()
        )


def _launch(playwright: Any, chromium: str, user_data_dir: str, viewport: dict[str, int]) -> Any:
    if not os.path.isfile(chromium):
        raise UserError(f"no Chromium at {chromium}; install it (apt-get install chromium) or pass its path")
    return playwright.chromium.launch_persistent_context(
        user_data_dir,
        executable_path=chromium,
        headless=True,
        args=list(CHROMIUM_FLAGS),
        viewport=viewport,
    )


@contextlib.contextmanager
def open_page(
    folder: str, chromium: str = CHROMIUM, width: int = 1280, height: int = 800, playwright: Any = None
) -> Iterator[WebPage]:
    """Opens a web export's page in headless Chromium with a fresh profile, served from 127.0.0.1, every
    other host refused, and waits for its model; yields a WebPage.

    Args:
      playwright: a started Playwright (sync API) to launch Chromium with, for several pages open at
        once; None: one of its own.

    Raises:
      UserError: `folder` holds no web export, Chromium or Playwright is missing, or the page cannot load
        its model.
    """
    if not os.path.isfile(os.path.join(folder, "index.html")):
        raise UserError(f"{folder} holds no web page; write one with scripts/export.py {flag('format')}=web")
    with contextlib.ExitStack() as stack:
        if playwright is None:
            playwright = stack.enter_context(start_playwright())
        profile = stack.enter_context(tempfile.TemporaryDirectory(prefix="tf_charrnn_chromium-"))
        url = stack.enter_context(serve(folder))
        context = _launch(playwright, chromium, profile, {"width": width, "height": height})
        stack.callback(context.close)
        page = WebPage(context.pages[0] if context.pages else context.new_page(), url)
        page.load()
        yield page


@contextlib.contextmanager
def start_playwright() -> Iterator[Any]:
    """Yields a started Playwright (sync API); UserError if it is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise UserError(
            "Playwright is not installed; pip install playwright (it drives the system's Chromium)"
        ) from error
    with sync_playwright() as playwright:
        yield playwright
