"""tinyvit-engine: a torch-free CPU inference engine for MobileViT and MobileViTV2 (transformers' definitions)."""

from .convert import convert
from .errors import InputError, TinyVitError, UnsafeCheckpointError, UnsupportedConfigError, WeightsFormatError
from .model import Model, ModelOutput, load
from .postprocess import post_process_semantic_segmentation
from .processor import MobileViTImageProcessor, load_image

__version__ = "0.1.0"
__all__ = [
    "convert",
    "load",
    "Model",
    "ModelOutput",
    "MobileViTImageProcessor",
    "load_image",
    "post_process_semantic_segmentation",
    "TinyVitError",
    "InputError",
    "UnsupportedConfigError",
    "UnsafeCheckpointError",
    "WeightsFormatError",
]
