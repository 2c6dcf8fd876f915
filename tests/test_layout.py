"""The tree shows the architecture: stage modules in pipeline/stages, library pieces apart, imports
flowing one way. Static: every ``import`` of a pipeline module counts, in functions too, except
annotation-only imports under ``if TYPE_CHECKING:``."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
STAGES = {"fetch", "ingest", "split", "plan", "train", "calibrate", "score", "validate", "sample", "run",
          "check_labels", "suggest"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
    return {m for m in found if m in known} - {module_name(path)}


def graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py")]
    known = {module_name(p) for p in files}
    # the package itself and pipeline.methods' registry are entered by importing any submodule
    return {module_name(p): imports(p, known) - {"pipeline"} for p in files}


def test_stage_modules_sit_together_named_for_their_stages():
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert stages == STAGES
    assert not {p.stem for p in PACKAGE.glob("*.py")} & (STAGES - {"train"}), "a stage module outside stages/"


def test_the_library_never_imports_a_stage_and_stages_import_each_other_only_through_run():
    for module, deps in graph().items():
        stage_deps = {d for d in deps if d.startswith("pipeline.stages.")}
        if not module.startswith("pipeline.stages") and module != "pipeline.cli":
            assert not stage_deps, f"library module {module} imports stages {stage_deps}"
        elif module not in ("pipeline.stages.run", "pipeline.cli"):
            assert not stage_deps, f"stage {module} imports other stages {stage_deps}: go through run"


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges.get(module, ())):
            if dep.startswith("pipeline.methods.") and module == "pipeline.methods":
                continue  # the registry imports its method modules, which register themselves
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
