"""The Char-RNN model: the Keras model (char_rnn), its recurrent layers (recurrent, fused_lstm), the fused
C++ kernels and their loader (kernels/, native), and the sequence loss (losses)."""

from tf_charrnn import moved

# The names of the flat layout's tf_charrnn.model module, with a DeprecationWarning.
__getattr__ = moved.package_getattr(__name__)
