"""Generates text with a web export's page in headless Chromium, as a person would in a browser:
scripts/webpage.py --export_dir=/tmp/charrnn_web --prime="ROMEO:" --length=300 --screenshot=page.png

The page's text goes to stdout, its speed (characters per second at batch 1, LiteRT.js on WebAssembly)
to stderr. To use the page yourself, serve the folder and open it: python -m http.server -d DIR 8000.
"""

import sys

from tf_charrnn.cli import flags
from tf_charrnn.config import WebPageConfig
from tf_charrnn.errors import UserError


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(WebPageConfig)
    from tf_charrnn.export import browser

    with browser.open_page(config.export_dir, config.chromium, width=config.width) as page:
        result = page.generate(
            prime=config.prime or None,
            length=config.length,
            sampling=config.sampling,
            temperature=config.temperature,
            top_k=config.top_k,
            seed=config.seed,
        )
        if result.error:
            raise UserError(f"--prime: the page says: {result.error}")
        if config.screenshot:
            page.page.screenshot(path=config.screenshot, full_page=True)
    sys.stdout.write(result.text + "\n")
    print(
        f"{result.generated} characters: {result.chars_per_second:,.0f} chars/s "
        f"(batch 1, LiteRT.js WebAssembly in headless Chromium)",
        file=sys.stderr,
    )


def run() -> None:
    flags.define_flags(WebPageConfig)
    flags.run(main)
