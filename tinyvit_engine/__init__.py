"""tinyvit-engine: a torch-free CPU inference engine for MobileViT and MobileViTV2 (transformers' definitions)."""

from .convert import convert
from .dropin import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    MobileViTForImageClassification,
    MobileViTForSemanticSegmentation,
    MobileViTModel,
    MobileViTV2ForImageClassification,
    MobileViTV2ForSemanticSegmentation,
    MobileViTV2Model,
    pipeline,
)
from .errors import InputError, TinyVitError, UnsafeCheckpointError, UnsupportedConfigError, WeightsFormatError
from .hub import HubError
from .model import Model, ModelOutput, load
from .postprocess import post_process_semantic_segmentation
from .processor import BatchFeature, MobileViTFeatureExtractor, MobileViTImageProcessor, load_image

__version__ = "0.1.0"
__all__ = [
    "convert",
    "load",
    "Model",
    "ModelOutput",
    "MobileViTImageProcessor",
    "MobileViTFeatureExtractor",
    "BatchFeature",
    "AutoImageProcessor",
    "AutoModel",
    "AutoModelForImageClassification",
    "AutoModelForSemanticSegmentation",
    "MobileViTModel",
    "MobileViTForImageClassification",
    "MobileViTForSemanticSegmentation",
    "MobileViTV2Model",
    "MobileViTV2ForImageClassification",
    "MobileViTV2ForSemanticSegmentation",
    "pipeline",
    "load_image",
    "post_process_semantic_segmentation",
    "TinyVitError",
    "InputError",
    "UnsupportedConfigError",
    "UnsafeCheckpointError",
    "WeightsFormatError",
    "HubError",
]
