"""The package layout: no module imports another in a circle, and the layers import downwards.

Every ``import`` statement of every module counts, also those inside functions (a
deferred import still ties the two modules together), except in an
``if __name__ == "__main__":`` block: that code runs only when the file is a script,
which is then the ``__main__`` module, not the package module. The lazy lookups of
:mod:`sinet_ase.registry` (modules named as text, so that models and tasks register
themselves) are the one sanctioned way for a lower layer to reach a higher one.

The layers (docs/architecture.md): ``ops`` (equivariant operations) -> the core (networks,
graphs, model files, calculator, inference, integrations) -> the generic trainer (``train``)
-> the task folders (``potential``, ``qm9``, ``nbody``) and the applications (``cli``,
``md``, ``evaluate``). The modules that only re-export a moved module under its old path
(:data:`OLD_PATHS`) are outside the layers.
"""

import ast
import functools
import importlib
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sinet_ase"


def module_names():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def is_main_block(node):
    """``if __name__ == "__main__":`` at module level."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def imports_of(name, path, names):
    """The package modules that ``name`` (file ``path``) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not is_main_block(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            # "from package import module" names the module, "from module import name" the module
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in names else module for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target not in names and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in names and target != name:
                found.add(target)
    return found


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    script = ast.parse('if __name__ == "__main__":\n    import x\nif True:\n    import y\n')
    assert [is_main_block(node) for node in script.body] == [True, False]


@functools.lru_cache(maxsize=1)
def import_graph():
    """``{module: the package modules it imports}`` over the whole package (parsed once)."""
    names = module_names()
    return {name: imports_of(name, path, names) for name, path in names.items()}


def test_no_module_imports_in_a_circle():
    assert cycles(import_graph()) == []


# --- layers ------------------------------------------------------------------------------

#: the task folders: each holds one task's data, model head and task
TASKS = ("sinet_ase.potential", "sinet_ase.qm9", "sinet_ase.nbody")
#: the applications: command lines and tools on top of everything else
APPS = ("sinet_ase.cli", "sinet_ase.md", "sinet_ase.evaluate")
#: modules that every layer may import (no sinet_ase imports of their own but these)
BASE = ("sinet_ase.errors", "sinet_ase.files", "sinet_ase.hparams", "sinet_ase.background")
#: old import paths kept as re-exports of the modules that moved (old path -> new home)
OLD_PATHS = {
    "sinet_ase.data.atomic": "sinet_ase.potential.data",
    "sinet_ase.data.qm9": "sinet_ase.qm9.cache",
    "sinet_ase.train.finetune": "sinet_ase.potential.finetune",
}


def part_of(name, parts):
    """The entry of ``parts`` that module ``name`` is, or is inside of (None if none)."""
    return next((p for p in parts if name == p or name.startswith(p + ".")), None)


def layer_of(name):
    if name in OLD_PATHS or part_of(name, ("sinet_ase.data",)):
        return "old path"
    if part_of(name, ("sinet_ase.ops",)):
        return "ops"
    if part_of(name, TASKS):
        return "task"
    if part_of(name, APPS):
        return "app"
    if part_of(name, ("sinet_ase.train",)):
        return "train"
    return "core"


def layer_violations(graph):
    """``(module, imported, rule)`` for each import that goes against the layers."""
    out = []
    for name, targets in graph.items():
        layer = layer_of(name)
        for target in sorted(targets):
            other = layer_of(target)
            if layer == "ops" and other != "ops" and target not in BASE:
                out.append((name, target, "ops import only ops and the base modules"))
            elif layer in ("ops", "core") and other in ("train", "task", "app", "old path"):
                out.append((name, target, "the core imports no trainer, task or application"))
            elif layer == "train" and other in ("task", "app", "old path"):
                out.append((name, target, "the trainer names no task (tasks register themselves)"))
            elif layer == "task" and other == "task" and part_of(name, TASKS) != part_of(target, TASKS):
                out.append((name, target, "a task folder does not import another task folder"))
            elif layer == "task" and other in ("app", "old path"):
                out.append((name, target, "a task imports no application and no old path"))
    return out


def test_layer_check_sees_a_violation():
    graph = {
        "sinet_ase.ops.gate": {"sinet_ase.model", "sinet_ase.errors"},
        "sinet_ase.model": {"sinet_ase.qm9.task"},
        "sinet_ase.train.trainer": {"sinet_ase.potential.task"},
        "sinet_ase.qm9.task": {"sinet_ase.potential.data", "sinet_ase.qm9.data", "sinet_ase.train.tasks"},
        "sinet_ase.cli": {"sinet_ase.qm9.cache"},
    }
    assert [(a, b) for a, b, _ in layer_violations(graph)] == [
        ("sinet_ase.ops.gate", "sinet_ase.model"),
        ("sinet_ase.model", "sinet_ase.qm9.task"),
        ("sinet_ase.train.trainer", "sinet_ase.potential.task"),
        ("sinet_ase.qm9.task", "sinet_ase.potential.data"),
    ]


def test_layers_import_downwards():
    graph = import_graph()
    assert layer_violations(graph) == []
    assert all(any(layer_of(n) == layer for n in graph) for layer in ("ops", "core", "train", "task", "app"))


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_old_import_paths_still_work(old, new):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        before, after = importlib.import_module(old), importlib.import_module(new)
    public = [k for k in vars(after) if not k.startswith("_") and getattr(vars(after)[k], "__module__", None) == new]
    assert public and all(getattr(before, k) is getattr(after, k) for k in public)


def test_moved_task_names_still_import_from_train_tasks():
    from sinet_ase.potential import task
    from sinet_ase.train import tasks

    with pytest.warns(DeprecationWarning, match="sinet_ase.potential.task"):
        assert tasks.EnergyForceTask is task.EnergyForceTask
    for name in ("DataConfig", "ENERGY_ONLY_TRAINING_KEYS"):
        with pytest.warns(DeprecationWarning):
            assert getattr(tasks, name) is getattr(task, name)
