"""Driver-behaviour pipeline: one module per DVC stage (demo, frames, landmarks, features, ...).

Nothing heavy is imported here: each stage imports MediaPipe, OpenCV or pyarrow itself.
"""

__version__ = "0.1.0"
