"""The model registry, the zoo and baselines, training, pinned numerics and the predictor."""
