"""The package layout: no module imports another in a circle.

Every ``import`` statement of every module counts, also those inside functions (a
deferred import still ties the two modules together), except in an
``if __name__ == "__main__":`` block: that code runs only when the file is a script,
which is then the ``__main__`` module, not the package module. The lazy lookups of
:mod:`sinet_ase.registry` (modules named as text, so that models and tasks register
themselves) are the one sanctioned way for a lower layer to reach a higher one.
"""

import ast
from pathlib import Path

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


def test_no_module_imports_in_a_circle():
    names = module_names()
    graph = {name: imports_of(name, path, names) for name, path in names.items()}
    assert cycles(graph) == []
