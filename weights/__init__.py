"""The weights that ship with tinyvit-engine, installed as tinyvit_engine.weights (README.md here says how each
file was made; tools/train_demo.py makes them)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_CLASSIFIER = HERE / "mobilevit-digits.safetensors"
DEMO_SEGMENTER = HERE / "deeplabv3-mobilevit-digits.safetensors"
DEMO_CLASSIFIER_INT8 = HERE / "mobilevit-digits.int8.safetensors"  # int8 storage, 1.0 MB
DEMO_SEGMENTER_INT8 = HERE / "deeplabv3-mobilevit-digits.int8.safetensors"  # int8 storage, 1.4 MB
