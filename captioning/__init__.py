"""captioning: attention image captioners on TensorFlow 2 and Keras 3.

Importing the package has no side effects and does not import TensorFlow. Process settings
(the CPU allocator, log levels) are made by the entry points through `runtime.setup_process`.
`import captioning.models` registers the Keras layers (for `keras.saving.load_model`).
"""
