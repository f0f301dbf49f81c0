# SPDX-License-Identifier: Apache-2.0
"""
The README's code runs as written and prints what the README says it prints; its demo table is
the committed output of the demo.

Every ```python block is executed, in order and in one namespace (as a reader pasting them into
one session would), in a fresh interpreter that imports this checkout's package. A ```text block
that follows a python block (before the next one) is that block's expected output, compared
exactly (a block without one must print nothing): after a change that moves the numbers, run
the block and paste what it prints.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SEPARATOR = "----- end of README block -----"

# runs the blocks given as arguments in one namespace, each followed by SEPARATOR on stdout
RUNNER = f"""
import sys
namespace = {{"__name__": "__main__"}}
for number, block in enumerate(sys.argv[1:]):
    exec(compile(block, f"README.md, python block {{number + 1}}", "exec"), namespace)
    print({SEPARATOR!r}, flush=True)
"""


def readme_blocks():
    """``[(code, expected output or None)]`` for the python blocks of the README, in order."""
    blocks = []
    for match in FENCE.finditer(README):
        language, text = match.groups()
        if language == "python":
            blocks.append([text, None])
        elif language == "text" and blocks and blocks[-1][1] is None:
            blocks[-1][1] = text
    return blocks


def test_the_readme_has_a_quick_start_and_a_pooling_example():
    blocks = readme_blocks()
    quick_start = blocks[0][0]
    assert "with handler:" in quick_start and "probmix(alpha=0.1, graph=FullGraph())" in quick_start
    assert sum("@register_pool(dist.Geometric, dist.Geometric)" in code for code, _ in blocks) == 1
    assert blocks[0][1].splitlines()[0].startswith("ERM ") and blocks[0][1].splitlines()[1].startswith("ProbMix ")


def test_every_readme_python_block_runs_and_prints_its_output(tmp_path):
    blocks = readme_blocks()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # run outside the checkout, so that nothing but PYTHONPATH decides which package is imported
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *(code for code, _ in blocks)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split(SEPARATOR + "\n")
    assert printed[-1] == ""  # every block finished
    for number, ((_, expected), output) in enumerate(zip(blocks, printed[:-1]), start=1):
        expected = expected or ""  # a block without a text block after it prints nothing
        assert output == expected, f"README python block {number} printed\n{output}\nbut the README says\n{expected}"
    assert list(tmp_path.iterdir()) == []  # the blocks write no files


def test_the_readme_demo_table_is_the_committed_demo_output():
    """examples/toy_regression.md is what ``bash run.sh demo`` writes (see its docstring);
    tests/test_examples.py regenerates it under ``-m slow``."""
    quoted = re.search(
        r"<!-- demo-table: examples/toy_regression.md, checked by tests/test_readme.py -->\n(.*?)<!-- end demo-table -->",
        README, re.DOTALL,
    )
    assert quoted is not None, "the README lost its demo-table markers"
    assert quoted.group(1) == (ROOT / "examples" / "toy_regression.md").read_text()
