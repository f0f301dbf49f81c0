# SPDX-License-Identifier: Apache-2.0
"""
Sphinx configuration of the pyro-probmix documentation.

Build (warnings are errors; every tutorial notebook is executed)::

    PROBMIX_FAST=1 .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

``PROBMIX_FAST=1`` makes each tutorial run its short setting (seconds instead of minutes), as
continuous integration does; without it the tutorials run their full setting, the one to
publish (under three minutes per notebook on a 2-core CPU, and only when a notebook's code
changed: see the execution cache below).
Each page says which setting produced it, and the numbers in its text are glued from its own
cells (myst-nb's ``glue``), so text and outputs cannot disagree in either setting.

The build needs no network: intersphinx is not used (links to Pyro's and PyTorch's documentation
are ``extlinks``, plain URLs), and the data the tutorials read come from ``shared/data`` (or
``$PROBMIX_DATA``). Environment variables read here:

* ``PROBMIX_FAST``: ``1`` for the short setting.
* ``PROBMIX_DOCS_EXECUTE``: myst-nb execution mode. Default: ``force`` in the fast setting (run
  every notebook on every build), ``cache`` in the full one (run a notebook only when its code
  changed; the cache of each setting lives in its own folder, since myst-nb keys it on the code
  alone). ``auto`` and ``off`` are myst-nb's other modes.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
from myst_nb.core.read import read_myst_markdown_notebook

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # autodoc imports the package from the checkout

import pyro_probmix  # noqa: E402

# -- project ---------------------------------------------------------------------------------
project = "pyro-probmix"
author = "the pyro-probmix authors"
copyright = "the pyro-probmix authors, Apache-2.0"
version = release = pyro_probmix.__version__

# -- extensions ------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # docstrings are reST (:param:) and numpy style
    "sphinx.ext.mathjax",  # MathJax is loaded by the reader's browser, not at build time
    "sphinx.ext.viewcode",
    "myst_nb",  # MyST Markdown pages and MyST notebooks (executed at build time)
    "sphinx.ext.extlinks",  # links into Pyro's and PyTorch's documentation, no network needed
]

# {pyro}`SVI <inference_algos.html#pyro.infer.svi.SVI>` links to Pyro's stable documentation
extlinks = {
    "pyro": ("https://docs.pyro.ai/en/stable/%s", None),
    "torch": ("https://pytorch.org/docs/stable/%s", None),
}

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints", "tutorials/_notebooks"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# -- autodoc ---------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_inherit_docstrings = False  # do not pull torch's docstrings into ours
autodoc_typehints = "none"
autoclass_content = "both"  # class docstring + __init__ docstring
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# -- MyST / myst-nb --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "substitution", "deflist"]
myst_heading_anchors = 3
FAST = os.environ.get("PROBMIX_FAST", "0") not in ("", "0")
SETTING = "fast" if FAST else "full"
nb_execution_mode = os.environ.get("PROBMIX_DOCS_EXECUTE", "force" if FAST else "cache")
nb_execution_timeout = 900  # seconds per cell; the full (non-FAST) setting is well under this
nb_execution_raise_on_error = False  # a failing cell is a warning (an error under -W) with its traceback in the log
nb_execution_show_tb = True
nb_execution_allow_errors = False
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (the result tables) with MyST, tables included
nb_execution_cache_path = str(DOCS / "_build" / f".jupyter_cache-{SETTING}")

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pyro-probmix {release}"
html_static_path = ["_static"]
html_css_files = ["probmix.css"]  # wide tables scroll instead of being clipped
html_show_sourcelink = True

# -- pages owned by other parts of the project ------------------------------------------------
# docs/results.md (measured results) and docs/experiments.md are written by the experiment
# suite. They join the site only when present, so the build passes with or without them.
OPTIONAL_PAGES = [name for name in ("results", "experiments") if (DOCS / f"{name}.md").exists()]
HAS_RESULTS = "results" in OPTIONAL_PAGES
HAS_EXPERIMENTS = "experiments" in OPTIONAL_PAGES
myst_substitutions = {
    "results_link": (
        "**Measured results are available:** see {doc}`results`."
        if HAS_RESULTS
        else "*No measured results yet: this slot links to the results page "
        "(`docs/results.md`) once the experiment suite has produced it.*"
    )
    + (" {doc}`The experiments page <experiments>` says how to reproduce them." if HAS_EXPERIMENTS else ""),
}


def _optional_pages(app, docname, source):
    """Adds the optional pages that exist to the toctree placeholder of the index."""
    if docname != "index":
        return
    lines = "\n".join(OPTIONAL_PAGES)
    block = f"```{{toctree}}\n:hidden:\n:caption: Experiments and results\n\n{lines}\n```\n" if OPTIONAL_PAGES else ""
    source[0] = source[0].replace("<!-- optional-pages -->", block)


TUTORIALS = DOCS / "tutorials"
NOTEBOOKS = TUTORIALS / "_notebooks"  # generated, ignored by git and by Sphinx


def _write_notebooks():
    """
    Each tutorial as a Jupyter notebook (``.ipynb``, without outputs) for the download link at
    the top of its page; the MyST Markdown source is the one that is maintained.
    """
    NOTEBOOKS.mkdir(exist_ok=True)
    for source in sorted(TUTORIALS.glob("[0-9][0-9]_*.md")):
        notebook = read_myst_markdown_notebook(source.read_text())
        nbformat.write(notebook, NOTEBOOKS / f"{source.stem}.ipynb")


def _download_links(app, docname, source):
    """Puts the download links of a tutorial under its title."""
    if not docname.startswith("tutorials/") or not (NOTEBOOKS / f"{docname[10:]}.ipynb").exists():
        return
    name = docname[10:]
    links = (
        f"\n*Download this tutorial:* {{download}}`Jupyter notebook <_notebooks/{name}.ipynb>` "
        f"or {{download}}`MyST Markdown notebook <{name}.md>` (open it with jupytext).\n"
    )
    title = source[0].index("\n# ")
    end = source[0].index("\n", title + 1)
    source[0] = source[0][: end + 1] + links + source[0][end + 1 :]


def _always_reread(app, env, added, changed, removed):
    """
    Pages to reread although their source did not change. In ``force`` mode: all of them, so
    that a build over an existing ``_build`` still executes every notebook and re-imports the
    library for autodoc (Sphinx would otherwise skip unchanged pages, and a change in
    ``pyro_probmix`` alone would not be checked). Otherwise the index and the method guide,
    which depend on which optional pages exist.
    """
    if nb_execution_mode == "force":
        return sorted(env.found_docs)
    return [name for name in ("index", "choosing") if name in env.found_docs]


def _pin_kernel():
    """
    Run the notebooks with this interpreter. A ``python3`` kernelspec written into the build
    folder and put first on ``JUPYTER_PATH`` shadows any user-wide ``python3`` kernel that
    points at another Python (which would lack torch and the package).
    """
    kernels = DOCS / "_build" / ".jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=ERROR"],
        "display_name": "Python 3 (pyro-probmix docs)",
        "language": "python",
        "env": {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            # figures are rendered into the page, whatever MPLBACKEND the caller has set
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MATPLOTLIBRC": str(DOCS / "matplotlibrc"),  # 150 dpi figures
            # the tutorials' networks are small: one thread per kernel is as fast on an idle
            # machine and up to 10x faster on a busy one (no OpenMP threads spinning against
            # other processes, or against a second notebook under sphinx-build -j 2)
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            # `import pyro` imports tqdm.auto, which warns in a kernel without ipywidgets
            "PYTHONWARNINGS": ",".join(
                filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"])
            ),
        },
    }
    (kernels / "kernel.json").write_text(json.dumps(spec, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(kernels.parent.parent), os.environ.get("JUPYTER_PATH")])
    )


_pin_kernel()
_write_notebooks()


def setup(app):
    app.connect("source-read", _optional_pages)
    app.connect("source-read", _download_links)
    app.connect("env-get-outdated", _always_reread)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
