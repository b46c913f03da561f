"""What runs where, decided once at start (placement), and tf.distribute's strategies and replicas
(distribute), and the TF_CONFIG a multi-worker launch reads (tf_config)."""

from tf_charrnn import moved

# The names of the flat layout's tf_charrnn.runtime module, with a DeprecationWarning.
__getattr__ = moved.package_getattr(__name__)
