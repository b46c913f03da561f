"""Exports of a trained run: the SavedModel (saved_model), LiteRT (litert), the static web page (web, with
its sources in web_page/), and Chromium driving that page (browser)."""

from tf_charrnn import moved

# The names of the flat layout's tf_charrnn.export module, with a DeprecationWarning.
__getattr__ = moved.package_getattr(__name__)
