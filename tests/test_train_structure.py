"""The trainer's structure: no import circle among wage_train's modules (imports inside functions included), and
both runners implement the Runner protocol."""

from __future__ import annotations

import ast
from pathlib import Path

import wage_train

PACKAGE = Path(wage_train.__file__).parent


def _imports(path: Path) -> set[str]:
    """The wage_train modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wage_train"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if (PACKAGE.parent / (n.replace(".", "/") + ".py")).is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wage_train.")}
    return found


def test_no_import_circle():
    graph = {f"wage_train.{p.stem}": _imports(p) - {f"wage_train.{p.stem}"} for p in PACKAGE.glob("*.py")}
    assert graph["wage_train.loop"] >= {"wage_train.config", "wage_train.runner"}  # the walk sees imports
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_both_runners_implement_the_protocol():
    from wage_spec import WAGEConfig
    from wage_train.jax_runner import JaxRunner
    from wage_train.runner import Runner
    from wage_train.runspec import ModelSpec
    from wage_train.torch_runner import TorchRunner

    spec = ModelSpec(kind="mlp", image_shape=(8, 8, 1), hidden=(4,))
    for cls in (JaxRunner, TorchRunner):
        runner = cls(spec, WAGEConfig(), quantized=True, lrs=[8.0], steps_per_epoch=1, seed=0)
        assert isinstance(runner, Runner), cls.__name__
    assert not isinstance(object(), Runner)
