"""The project's imports run one way: read from the source with ast (nothing executed),
every import anywhere in a module (function-local ones too) is an edge, and the graph of
pose_vq/, data_builders/ and configs/ has no cycle; the layers of the design hold."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("pose_vq", "data_builders", "configs")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a submodule import also imports its
    parent packages)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0],
                                                  base]))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                         if ".".join(parts[:i]) in files)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"pose_vq.state", "pose_vq.step", "pose_vq.train", "pose_vq.visualize",
            "pose_vq.benchmarks.harness", "data_builders.panoptic_heatmaps"} <= set(graph)
    assert "pose_vq.state" in graph["pose_vq.step"]  # edges are found at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# Each module may import only from its own layer or those below it.
LAYERS = (
    ("pose_vq.data", "pose_vq.models", "pose_vq.losses", "pose_vq.metrics", "pose_vq.visualize",
     "pose_vq.pose3d", "pose_vq.fit", "pose_vq.sharding", "pose_vq.summary"),
    ("pose_vq.config", "configs"),
    ("pose_vq.state",),
    ("pose_vq.step", "pose_vq.checkpointing"),
    ("pose_vq.evaluate", "pose_vq.tokenize"),
    ("pose_vq.train",),
)


def _layer(module: str) -> int | None:
    if module == "pose_vq.visualize.__main__":
        return None  # a command-line entry point: above every layer
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_layers_import_only_downwards(layer):
    graph = import_graph()
    for module, targets in graph.items():
        if _layer(module) != layer:
            continue
        # Unlayered pose_vq modules are entry points (main, benchmark, analysis, ...).
        upward = sorted(t for t in targets if t.startswith("pose_vq.")
                        and (_layer(t) is None or _layer(t) > layer))
        assert not upward, f"{module} imports {upward} from above its layer"
