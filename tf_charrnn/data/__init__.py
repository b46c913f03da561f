"""The corpus: its files (corpus_files) and text (sources), its ids in the cache (encoded), its vocabulary
(vocab), its training and validation splits (splits), and the tf.data pipelines (pipeline)."""

from tf_charrnn import moved

# The names of the flat layout's tf_charrnn.data module, with a DeprecationWarning.
__getattr__ = moved.package_getattr(__name__)
