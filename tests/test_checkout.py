"""A source checkout works from its root, as a new user meets it: installed or not, editable or not.

kernels/ and weights/ sit at the repository's root and become tinyvit_engine.kernels / .weights (tinyvit_engine/
_layout.py says how). From a clone's root Python imports the clone's tinyvit_engine/, not the installed one, so
these tests run from the root of a copy of the checkout: a quick one with no install at all, and a slow one with
README's first command (a non-editable `pip install .` into a fresh venv) and README's commands and snippets."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "compiling the kernels for this CPU"
README = (ROOT / "README.md").read_text()


def _copy_checkout(dst: Path) -> Path:
    """The files a clone has (no venv, no caches, no build output)."""
    skip = shutil.ignore_patterns(".git", ".venv", "__pycache__", "build", "*.egg-info", ".pytest_cache", ".ruff_cache")
    shutil.copytree(ROOT, dst, ignore=skip)
    return dst


def python_snippets() -> list[str]:
    """README's Python blocks, each runnable as written, offline."""
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_runnable_python_snippets():
    assert len(python_snippets()) >= 2


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return _copy_checkout(tmp_path_factory.mktemp("clone") / "tinyvit-engine")


def test_a_checkout_imports_from_its_root_without_an_install(checkout):
    code = (
        "import tinyvit_engine, tinyvit_engine.kernels as k, tinyvit_engine.weights as w\n"
        "from tinyvit_engine.kernels import warm\n"
        "print(tinyvit_engine.__file__, k.__file__, w.DEMO_CLASSIFIER.is_file(), warm.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    package, kernels, demo, warm = done.stdout.split()
    assert Path(package).is_relative_to(checkout) and Path(kernels) == checkout / "kernels" / "__init__.py"
    assert demo == "True" and warm == "tinyvit_engine.kernels.warm"


def test_the_bare_name_kernels_stays_pypis_from_a_checkouts_root(checkout):
    """transformers 5 imports Hugging Face's `kernels` package; from a clone's root the folder kernels/ comes first on
    sys.path and hands that name over (kernels/_bare.py), so transformers and the engine both work there."""
    code = (
        "import transformers, kernels, tinyvit_engine.kernels as k\n"
        "transformers.MobileViTModel, transformers.MobileViTV2ForSemanticSegmentation\n"
        "print(kernels.__file__, hasattr(kernels, 'CUDAProperties'), k.__file__, len(k.OPS))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    bare, owned, library, ops = done.stdout.split()
    assert not Path(bare).is_relative_to(checkout) and owned == "True"
    assert Path(library) == checkout / "kernels" / "__init__.py" and int(ops) > 10
    # where no package owns the name, the error says what the folder is
    code = "import sys; sys.path = [p for p in sys.path if 'site-packages' not in p]; import kernels"
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True)
    assert done.returncode != 0 and "import it as tinyvit_engine.kernels" in done.stderr, done.stderr[-2000:]


def test_old_module_paths_still_import(checkout):
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import tinyvit_engine.ray\nexcept DeprecationWarning as e:\n    print(e)\n"
        "warnings.simplefilter('ignore')\n"
        "import tinyvit_engine.ray, tinyvit_engine.jobs.ray, tinyvit_engine.weights_file\n"
        "from tinyvit_engine.convert import read_checkpoint\n"
        "print(tinyvit_engine.ray.classify.__module__, tinyvit_engine.weights_file.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "tinyvit_engine.ray is now tinyvit_engine.jobs.ray"
    assert done.stdout.split("\n")[1] == "tinyvit_engine.jobs.ray tinyvit_engine.formats.weights_file"


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_readme_python_snippet_runs_from_the_root(index):
    done = subprocess.run(
        [sys.executable, "-c", python_snippets()[index]],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_readme_first_command_then_everything_from_the_clone_root():
    """README's first command into a fresh venv (non-editable), then, from the clone's root: the CLI (compiling
    nothing: the kernels ship), README's Python snippets, and every documented `python -m tinyvit_engine...` command;
    then the installed package, not writable, run by a user who is not root (a container's usual set-up)."""
    base = Path(tempfile.mkdtemp(prefix="tinyvit-clone-", dir="/tmp"))  # readable by the other user
    try:
        base.chmod(0o755)
        _fresh_install_from_the_root(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fresh_install_from_the_root(base: Path) -> None:
    clone = _copy_checkout(base / "tinyvit-engine")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    for variable in ("PYTHONPATH", "TINYVIT_CACHE_DIR", "NUMBA_CACHE_DIR", "TINYVIT_TARGET", "TINYVIT_TILE_ROWS"):
        env.pop(variable, None)
    env["XDG_CACHE_HOME"] = str(base / "root-cache")  # a fresh cache, as on a fresh machine

    def run(*command: str, cwd: Path = clone) -> subprocess.CompletedProcess:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
        return done

    run(str(python), "-m", "pip", "install", "--quiet", ".")
    assert not (clone / "tinyvit_engine" / "kernels").exists()  # the clone stays as it was: kernels/ at the root
    first = run("tinyvit", "classify", "examples/digit-3.png", "--top-k", "3")
    assert "examples/digit-3.png: 3 (" in first.stdout
    assert MESSAGE not in first.stderr, "the first run compiled: the shipped kernels did not serve"
    code = "import tinyvit_engine, tinyvit_engine.kernels as k; print(k.__file__)"
    assert Path(run(str(python), "-c", code).stdout.strip()) == clone / "kernels" / "__init__.py"
    run(str(python), "-m", "tinyvit_engine.kernels.warm")
    assert "def product_" in run(str(python), "-m", "tinyvit_engine.kernels._tilegen").stdout
    assert (
        "3 (" in run(str(python), "-m", "tinyvit_engine", "classify", "examples/digit-3.png", "--threads", "1").stdout
    )
    assert "--quick" in run(str(python), "-m", "tinyvit_engine.bench", "--help").stdout
    for snippet in python_snippets():
        run(str(python), "-c", snippet)
    # away from the root, the installed package (with its own kernels/ inside) is what imports
    site = Path(run(str(python), "-c", code, cwd=base).stdout.strip()).parent.parent
    assert site.name == "tinyvit_engine" and "site-packages" in str(site)

    # the install is not writable by the one who runs it: root's files run by another user, or made read-only
    image = str(clone / "examples" / "digit-3.png")
    if os.geteuid() == 0:
        user = "tinyvit-test"
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", user], check=True)
        home = Path(f"/home/{user}")
        shutil.rmtree(home / ".cache", ignore_errors=True)
        as_user = ["runuser", "-u", user, "--", "env", "-u", "XDG_CACHE_HOME", f"HOME={home}"]
    else:
        home = base / "home"
        subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
        as_user = ["env", "-u", "XDG_CACHE_HOME", f"HOME={home}"]
    try:
        other = run(*as_user, str(env_dir / "bin" / "tinyvit"), "classify", image, cwd=base)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(site)], check=True)
    assert "digit-3.png: 3 (" in other.stdout and MESSAGE not in other.stderr, other.stderr
    assert list((home / ".cache" / "tinyvit-engine").glob("x86-64-v[34]-*/manifest.json"))
    assert not list(site.rglob("*.nbi")) or all("_compiled" in str(p) for p in site.rglob("*.nbi"))
