"""Training a run: the loop (trainer), the compiled step (train_step), learning-rate schedules
(schedules), TensorBoard (summaries)."""

from tf_charrnn import moved

# The names of the flat layout's tf_charrnn.training module, with a DeprecationWarning.
__getattr__ = moved.package_getattr(__name__)
