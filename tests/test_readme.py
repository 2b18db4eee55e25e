"""The README's functional-loss example runs as written and yields a finite loss and gradients."""
import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loss_example_runs():
    text = README.read_text()
    section = text[text.index("## The functional losses"):]
    code = re.search(r"```python\n(import jax.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert np.isfinite(float(namespace["loss"]))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(namespace["grads"]))
    assert {"data", "distil", "consis"} <= set(namespace["aux"])
