"""tinyvit-engine: a torch-free CPU inference engine for MobileViT and MobileViTV2 (transformers' definitions).

Layers, each importing only from those below it (tests/test_layout.py checks):
    kernels/                the kernel library (tinyvit_engine.kernels): imports nothing of the engine
    config, graph, models/, fusion, ops, executor     the engine: config -> graph -> fused graph -> kernel calls
    formats/                files and the Hub -> (config, preprocessor config, tensors)
    model, processor, postprocess                     load() and Model; images in, answers out
    api/, jobs/, bench/, cli        transformers' names; many images; peers and profiles; the command line
"""

from ._layout import mount

mount()  # first: in a source checkout, kernels/ and weights/ are found at the repository's root

from .api.dropin import (  # noqa: E402  (after mount)
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
from .config import MobileViTConfig, MobileViTV2Config  # noqa: E402
from .errors import (  # noqa: E402
    InputError,
    TinyVitError,
    UnsafeCheckpointError,
    UnsupportedConfigError,
    WeightsFormatError,
)
from .formats.convert import convert  # noqa: E402
from .formats.hub import HubError  # noqa: E402
from .model import Model, ModelOutput, load  # noqa: E402
from .postprocess import post_process_semantic_segmentation  # noqa: E402
from .processor import BatchFeature, MobileViTFeatureExtractor, MobileViTImageProcessor, load_image  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "convert",
    "load",
    "Model",
    "ModelOutput",
    "MobileViTConfig",
    "MobileViTV2Config",
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
