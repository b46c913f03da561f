"""The command-line entry points: flags -> a config -> one library call. The only place flags exist.

Each command that runs a model imports TensorFlow quietly (`tf_charrnn.startup.import_tensorflow`) once
its flags are valid.
"""
