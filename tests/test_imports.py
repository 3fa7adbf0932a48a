"""The package's import graph, read with `ast` (nothing imported): no module imports one that imports it back at
module level, and no two sub-packages import each other."""
from __future__ import annotations

from common.sources import import_graph, src_modules


def _graph() -> dict[str, set[str]]:
    """Module -> the noisecraft modules it imports at module level (deferred imports inside functions excluded)."""
    return import_graph(src_modules(), module_level=True)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m))), None)


def test_no_module_imports_one_that_imports_it_back():
    assert _cycle(_graph()) is None


def test_no_two_subpackages_import_each_other():
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    edges = {(top(u), top(v)) for u, vs in _graph().items() for v in vs if top(u) != top(v)}
    assert not {(a, b) for a, b in edges if (b, a) in edges}


def test_the_checks_see_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
