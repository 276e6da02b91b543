"""Where the package's modules are found, in a source checkout and under the module paths of 0.1.

kernels/ and weights/ live at the repository's root (the kernel library reads as a project of its own) and are
installed as tinyvit_engine.kernels and tinyvit_engine.weights (pyproject.toml's package-dir). Python run from a
clone's root imports the clone's tinyvit_engine/ (the current directory comes first on sys.path), where no install
has put them: `mount` then finds them beside it, so a checkout works as it is, installed or not, editable or not.

MOVED maps the flat module paths of 0.1 (tinyvit_engine.ray, .convert, ...) to where they live now: an old import
gets the new module, with a DeprecationWarning that names it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from pathlib import Path

PACKAGE = __name__.rpartition(".")[0]
HERE = Path(__file__).resolve().parent
MOVED = {
    "batch": "jobs",
    "ray": "jobs.ray",
    "convert": "formats.convert",
    "weights_file": "formats.weights_file",
    "torchbin": "formats.torchbin",
    "hub": "formats.hub",
    "dropin": "api.dropin",
    "explain": "api.explain",
    "costs": "bench.costs",
    "reference": "bench.reference",
    "jobbench": "bench.job",
    "coldstart": "kernels.coldstart",
}


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders  # full module name -> a root folder mounted under it (in a checkout)

    def find_spec(self, name: str, path=None, target=None):
        if name in self.folders:
            folder = self.folders[name]
            return importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
        short = name.removeprefix(PACKAGE + ".")
        if short in MOVED and name != short:
            return importlib.util.spec_from_loader(name, _Alias(f"{PACKAGE}.{MOVED[short]}"))
        return None


class _Alias(importlib.abc.Loader):
    """Loads an old module path as the module that now lives elsewhere (the same module object)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is now {self.target}", DeprecationWarning, stacklevel=3)
        self.module = importlib.import_module(self.target)
        self.spec = self.module.__spec__
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # importlib set it to the alias's; the module keeps its own


def mount() -> None:
    """Make the checkout's root folders importable under the package (a no-op in an installed package), and the old
    module paths importable. Called once, first thing, by the package's __init__."""
    folders = {}
    for name in ("kernels", "weights"):
        if not (HERE / name).is_dir() and (HERE.parent / name / "__init__.py").is_file():
            folders[f"{PACKAGE}.{name}"] = HERE.parent / name
    # first in line: an editable install of another checkout must not lend its kernels/ to this one
    sys.meta_path.insert(0, _Finder(folders))
