"""Why this folder steps aside when it is imported as plain `kernels`.

Python run from a clone's root puts the current directory first on sys.path, so `import kernels` finds this folder.
That name belongs to another PyPI package, Hugging Face's `kernels`, which transformers (5.x) requires and imports
as soon as one of its models is: without this, transformers would get the kernel library instead and fail
(`cannot import name 'CUDAProperties' from 'kernels'`). The kernel library's name is `tinyvit_engine.kernels`; under
the bare name, the folder hands `kernels` to the package that owns it, found on the rest of sys.path.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the folder holding kernels/: a clone's root


def step_aside() -> None:
    sys.modules.pop("kernels._bare", None)  # this module, imported as a submodule of the bare name: not PyPI's
    rest = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    spec = importlib.machinery.PathFinder.find_spec("kernels", rest)
    if spec is None:
        raise ModuleNotFoundError(
            f"No module named 'kernels' (the folder {ROOT / 'kernels'} is tinyvit-engine's kernel library: "
            "import it as tinyvit_engine.kernels)",
            name="kernels",
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # what the import statement returns once this folder's __init__ ends
    spec.loader.exec_module(module)
