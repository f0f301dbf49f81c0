# SPDX-License-Identifier: Apache-2.0
"""
The package installs like a library: the wheel built from this checkout carries its license,
metadata, type marker and console script, and, installed into a fresh virtual environment, runs
the README's quick start.

Nothing is downloaded: the wheel is built with the setuptools of this interpreter
(``--no-build-isolation --no-index``), and the fresh environment reuses this interpreter's torch
and pyro (a ``.pth`` line), so only the package itself is installed into it.
"""
import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import pyro_probmix

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of a copy of the checkout's tracked files (the build writes nothing here)."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        if (ROOT / name).is_file():  # a file deleted but not yet committed is skipped
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (path,) = out.glob("pyro_probmix-*.whl")
    return path


def test_the_wheel_carries_license_metadata_type_marker_and_console_script(wheel):
    version = pyro_probmix.__version__
    assert wheel.name == f"pyro_probmix-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"pyro_probmix-{version}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert {"pyro_probmix/py.typed", "pyro_probmix/__init__.py", "pyro_probmix/experiments/cli.py"} <= names
    assert not any(name.startswith(("tests/", "docs/", "examples/", "benchmarks/")) for name in names)
    assert metadata["Name"] == "pyro-probmix" and metadata["Version"] == version
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert {"Typing :: Typed", "Programming Language :: Python :: 3"} <= set(metadata.get_all("Classifier"))
    assert metadata["Requires-Python"] == ">=3.10"
    assert {re.split(r"[ ;>=<\[]", r)[0] for r in metadata.get_all("Requires-Dist") if "extra ==" not in r} == {
        "torch", "pyro-ppl", "numpy"
    }
    assert metadata.get_all("Project-URL")  # labelled links; see pyproject.toml for why only these
    assert "probmix-experiments = pyro_probmix.experiments.cli:main" in entry_points
    assert metadata.get_payload().startswith("# pyro-probmix")  # the README is the long description


def test_the_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = {attr = "pyro_probmix.__version__"}' in pyproject
    assert re.search(r'^version = "', pyproject, re.MULTILINE) is None
    assert f"version: {pyro_probmix.__version__}" in (ROOT / "CITATION.cff").read_text()


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_quick_start(wheel, tmp_path):
    from test_readme import readme_blocks

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # torch and pyro from this interpreter's site-packages, after the venv's own
    Path(site, "reuse_torch_and_pyro.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [python, "-c", "import pyro_probmix; print(pyro_probmix.__file__, pyro_probmix.__version__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert where == [str(Path(site, "pyro_probmix", "__init__.py")), pyro_probmix.__version__]
    (quick_start, expected), _ = readme_blocks()
    done = subprocess.run([python, "-c", quick_start], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    cli = subprocess.run([venv / "bin" / "probmix-experiments", "--help"], env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "Reproduce the experiments of the ProbMix paper" in cli.stdout


def test_the_public_api_of_the_building_blocks_is_annotated():
    """Every public function, constructor and extension method (the base classes' methods) of
    metrics, labels, graphs and embedding has annotated parameters and return type."""
    import inspect

    from pyro_probmix import embedding, graphs, labels, metrics  # embedding: the function

    callables = [embedding, graphs.Graph.sample, *(getattr(labels.LabelKernel, name) for name in (
        "centre", "pool", "expected_log_prob", "log_expected_prob", "mixed_expected_log_prob"))]
    for module in (metrics, labels, graphs):
        for name in module.__all__:
            obj = getattr(module, name)
            callables.append(obj.__init__ if inspect.isclass(obj) else obj)
    missing = []
    for fn in callables:
        if fn is object.__init__:  # a class without a constructor of its own
            continue
        signature = inspect.signature(fn)
        unannotated = [p for p in signature.parameters.values() if p.name != "self" and p.annotation is p.empty]
        if unannotated or signature.return_annotation is signature.empty:
            missing.append(fn.__qualname__)
    assert missing == []
