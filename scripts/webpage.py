"""Generates text with a web export's page in headless Chromium (the tests' driver, the README's
screenshot, the page's speed): scripts/webpage.py --export_dir=DIR --prime="ROMEO:" --screenshot=page.png
"""

# The same main as the `tf_charrnn.cli.webpage` module: flags, config, one library call.
from tf_charrnn.cli import webpage

if __name__ == "__main__":
    webpage.run()
