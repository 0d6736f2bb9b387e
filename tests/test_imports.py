"""The project's imports run one way: read from the source with ast (nothing executed),
every import anywhere in a module (function-local ones too) is an edge, and the graph of
pose_vq/, data_builders/ and configs/ has no cycle; the layers of the design hold."""

import ast
import pathlib

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


# Each module may import only from its own layer or those below it; a module belongs to the
# layer of its longest matching prefix, and every module of the project has one.
LAYERS = (
    # readers, models and the pieces every layer uses
    ("pose_vq.data", "pose_vq.models", "pose_vq.losses", "pose_vq.metrics", "pose_vq.visualize",
     "pose_vq.sharding", "pose_vq.summary", "pose_vq.runtime", "pose_vq.defaults", "pose_vq.errors",
     "pose_vq.stats", "pose_vq.paths"),
    ("data_builders.panoptic_heatmaps",),  # the TFDS builder renders with pose_vq.data
    ("pose_vq.data.prepare",),  # naming and building datasets, with the builder
    ("pose_vq.data.pipeline",),  # the loader: a damaged shard's message names prepare's build command
    ("pose_vq.config",),
    ("pose_vq.state",),
    ("pose_vq.step", "pose_vq.checkpointing"),
    ("pose_vq.evaluate", "pose_vq.tokenize"),
    ("pose_vq.train", "pose_vq.downstream"),
    # command-line entry points and the user's experiment files: nothing imports them
    ("pose_vq.main", "pose_vq.analysis", "pose_vq.benchmark", "pose_vq.benchmarks", "pose_vq.generate",
     "pose_vq.visualize.__main__", "data_builders.panoptic_heatmaps.__main__", "configs",
     "data_builders.panoptic_heatmaps.panoptic_heatmaps_dataset_builder_test"),
)


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix in LAYERS that ``module`` falls under."""
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    unlayered = sorted(m for m in import_graph() if m not in PACKAGES and layer_of(m) is None)
    assert not unlayered, f"modules in no layer of LAYERS: {unlayered}"


def test_an_upward_import_is_found():
    """The check below sees data_builders and configs as well as pose_vq."""
    graph = {"pose_vq.data.heatmaps": {"data_builders.panoptic_heatmaps"},
             "pose_vq.config": {"configs.demo"}}
    assert upward_imports(graph) == [
        ("pose_vq.config", "configs.demo"),
        ("pose_vq.data.heatmaps", "data_builders.panoptic_heatmaps")]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, target) for every import of a project module from a layer above its own
    (packages' ``__init__`` of a top-level package name are no layer's and import nothing)."""
    return sorted((module, t) for module, targets in graph.items() for t in targets
                  if t not in PACKAGES and layer_of(module) is not None
                  and (layer_of(t) is None or layer_of(t) > layer_of(module)))


def test_layers_import_only_downwards():
    upward = upward_imports(import_graph())
    assert not upward, "imports from above their layer: " + ", ".join(
        f"{m} -> {t}" for m, t in upward)
