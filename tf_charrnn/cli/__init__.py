"""The command-line entry points: flags -> a config -> one library call. The only place flags exist.

Importing this package quiets TensorFlow's C++ start-up logging (set before TensorFlow is imported).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
