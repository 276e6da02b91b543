"""What a transformers user meets: transformers' class names and pipeline() on the engine (dropin.py), and the
attention maps drawn as heatmaps over the image (explain.py)."""
