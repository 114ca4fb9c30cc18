"""Import direction of our packages, read from the source with `ast` (nothing is imported; a pure unit test).

Rules (docs/architecture.md, "The dependency rule"):
1. No module-level import cycle among the modules of funasr_triton, funasr_triton_export, funasr_triton_tools,
   loadtest and funasr_triton_models.
2. No import hidden in a function body to dodge a cycle: moved to module level, it must not close one. An import
   inside a function is fine for an optional heavy dependency (torch, funasr, pyannote, psutil: the export, eval
   and bench extras) that only that command needs, so that the command line starts without it; never for one of
   our modules to dodge a cycle.
3. Packages depend one way: funasr_triton (frontend and client) imports none of ours; funasr_triton_export
   (export, verify) may import funasr_triton; funasr_triton_tools (the `funasr-triton` command, bench,
   diarization eval, synthetic speech) may import both; loadtest may import all three. funasr_triton_models
   (the Triton models' code) imports none of ours, and the frontend does not import it (its image has neither
   the package nor its dependencies); export and tools may (verify and the exporters' checks run the served code).
4. No API surface imports another surface; below the surfaces (app services, jobs services, the client,
   top-level modules) nothing imports a surface except the composition root, `funasr_triton.app.main`.

What does not hold yet is listed in KNOWN_* below, by name, with the issue-15 step that removes it. A new
wrong-way import fails; so does a listed exception that is gone (then delete it from the list).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"funasr_triton": ROOT / "frontend" / "funasr_triton",
            "funasr_triton_export": ROOT / "export" / "funasr_triton_export",
            "funasr_triton_tools": ROOT / "tools" / "funasr_triton_tools",
            "loadtest": ROOT / "loadtest",
            "funasr_triton_models": ROOT / "model_code" / "funasr_triton_models"}
# the order packages stack in: a package may import those before it, never one after it
LAYERS = ("funasr_triton_models", "funasr_triton", "funasr_triton_export", "funasr_triton_tools", "loadtest")
# API surface packages of funasr_triton (wire protocol + routes). `jobs` is the job service (store, queue,
# runner, callbacks) that several surfaces use; the native /v1/jobs API is part of openai_api.
SURFACES = ("openai_api", "aliyun_api", "nls_ws", "funasr_ws", "seed_api", "dashscope_api", "filetrans_api")
SURFACE_MODULES: dict[str, str] = {}
COMPOSITION_ROOT = "funasr_triton.app.main"  # mounts every surface's router

KNOWN_SURFACE_TO_SURFACE: set[tuple[str, str]] = set()


class Import(NamedTuple):
    importer: str
    target: str     # the module imported (a submodule when `from pkg import submodule`)
    in_function: bool
    line: int


def discover(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages."""
    modules = {}
    for name, base in packages.items():
        for path in sorted(base.rglob("*.py")):
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import statement of a module (`if TYPE_CHECKING:` blocks skipped: they never run)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[:len(package) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    found.append(Import(module, sub if sub in modules else source, in_function, child.lineno))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return [i for i in found if i.target in modules and i.target != module]


def loaded_by(target: str, modules: dict[str, Path]) -> list[str]:
    """What importing `target` executes: its parent packages' __init__ and the module itself."""
    parts = target.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules]


class Graph:
    def __init__(self, packages: dict[str, Path]):
        self.modules = discover(packages)
        self.imports = [i for m, p in self.modules.items() for i in imports_of(m, p, self.modules)]
        self.edges: dict[str, set[str]] = defaultdict(set)
        for i in self.imports:
            if not i.in_function:
                self.edges[i.importer].update(m for m in loaded_by(i.target, self.modules) if m != i.importer)

    def path(self, start: str, goal: str) -> list[str] | None:
        """A module-level import chain start -> ... -> goal, or None."""
        seen, stack = {start}, [[start]]
        while stack:
            chain = stack.pop()
            if chain[-1] == goal:
                return chain
            for nxt in sorted(self.edges.get(chain[-1], ())):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(chain + [nxt])
        return None

    def cycles(self) -> list[str]:
        out = []
        for a in sorted(self.edges):
            for b in sorted(self.edges[a]):
                back = self.path(b, a)
                if back is not None:
                    out.append(" -> ".join([a, *back]))
        return out

    def dodges(self) -> list[str]:
        """Function-body imports that would close a cycle at module level."""
        out = []
        for i in self.imports:
            if i.in_function:
                for target in loaded_by(i.target, self.modules):
                    back = self.path(target, i.importer) if target != i.importer else None
                    if back is not None:
                        out.append(f"{i.importer}:{i.line} imports {target} in a function; at module level "
                                   f"it would close {' -> '.join([i.importer, *back])}")
        return out


def surface_of(module: str) -> str | None:
    if module in SURFACE_MODULES:
        return SURFACE_MODULES[module]
    parts = module.split(".")
    return parts[1] if parts[0] == "funasr_triton" and len(parts) > 1 and parts[1] in SURFACES else None


def wrong_way(graph: Graph) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(imports between packages against the direction, imports of a surface from outside it)."""
    layer = {name: i for i, name in enumerate(LAYERS)}
    packages, surfaces = set(), set()
    for i in graph.imports:
        src, dst = i.importer.split(".")[0], i.target.split(".")[0]
        if layer[dst] > layer[src] or (src, dst) == ("funasr_triton", "funasr_triton_models"):
            packages.add((i.importer, i.target))
        s, t = surface_of(i.importer), surface_of(i.target)
        if t is not None and s != t and i.importer != COMPOSITION_ROOT and src == "funasr_triton":
            surfaces.add((i.importer, i.target))
    return packages, surfaces


@lru_cache(maxsize=1)
def ours() -> Graph:
    return Graph(PACKAGES)


def test_no_module_level_import_cycles():
    assert ours().cycles() == []


def test_no_function_body_import_dodges_a_cycle():
    assert ours().dodges() == []


def test_packages_depend_one_way():
    """No exceptions: anywhere in a module, an import of a package above its own fails."""
    packages, _ = wrong_way(ours())
    assert packages == set(), "import against the package direction"


def test_frontend_never_imports_tools_at_module_level():
    """Strict, no exceptions: importing funasr_triton never loads a package above it."""
    packages, _ = wrong_way(ours())
    graph = ours()
    at_module_level = {(i.importer, i.target) for i in graph.imports if not i.in_function} & packages
    assert at_module_level == set()


def test_no_surface_imports_another_surface():
    _, surfaces = wrong_way(ours())
    assert surfaces - KNOWN_SURFACE_TO_SURFACE == set(), "new import of an API surface from outside it"
    assert KNOWN_SURFACE_TO_SURFACE - surfaces == set(), "a known exception is gone: remove it from the list"


def test_the_checks_catch_wrong_way_imports(tmp_path):
    """The analysis itself: a cycle, a dodged cycle, a wrong-way and a cross-surface import are all found."""
    files = {
        "ft/__init__.py": "",
        "ft/a.py": "from . import b\n",
        "ft/b.py": "from .a import x\n",                                   # cycle a <-> b
        "ft/c.py": "import funasr_triton.d\n",
        "ft/d.py": "def f():\n    from . import c\n",                     # cycle c <-> d, dodged
        "ft/e.py": "from funasr_triton_export.tool import main\n",         # frontend -> tools
        "ft/nls_ws/__init__.py": "",
        "ft/nls_ws/router.py": "from ..aliyun_api.protocol import NlsStatus\n",  # surface -> surface
        "ft/aliyun_api/__init__.py": "",
        "ft/aliyun_api/protocol.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import e\n",
        "ft/app/__init__.py": "",
        "ft/app/main.py": "def create_app():\n    from ..nls_ws.router import router\n",  # the root may
        "fx/__init__.py": "",
        "fx/tool.py": "import funasr_triton.a\n",                           # tools -> frontend: fine
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = Graph({"funasr_triton": tmp_path / "ft", "funasr_triton_export": tmp_path / "fx",
                   "loadtest": tmp_path / "lt"})
    assert graph.cycles() == ["funasr_triton.a -> funasr_triton.b -> funasr_triton.a",
                              "funasr_triton.b -> funasr_triton.a -> funasr_triton.b"]
    assert [d.split(":")[0] for d in graph.dodges()] == ["funasr_triton.d"]
    packages, surfaces = wrong_way(graph)
    assert packages == {("funasr_triton.e", "funasr_triton_export.tool")}
    assert surfaces == {("funasr_triton.nls_ws.router", "funasr_triton.aliyun_api.protocol")}


def test_the_tools_layer_sits_between_export_and_loadtest(tmp_path):
    """The analysis with all four packages: each may import those below it, none the ones above."""
    files = {
        "ft/__init__.py": "",
        "ft/client.py": "",
        "fx/__init__.py": "",
        "fx/verify.py": "from funasr_triton import client\n",                 # export -> frontend: fine
        "fx/wrong.py": "def f():\n    from funasr_triton_tools import bench\n",  # export -> tools, even in a function
        "fb/__init__.py": "",
        "fb/bench.py": "import funasr_triton.client\nfrom funasr_triton_export import verify\n",  # tools -> both: fine
        "fb/wrong.py": "import loadtest.run\n",                                 # tools -> loadtest
        "lt/__init__.py": "",
        "lt/run.py": "from funasr_triton_tools.bench import x\nimport funasr_triton_export.verify\n",  # fine
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = Graph({"funasr_triton": tmp_path / "ft", "funasr_triton_export": tmp_path / "fx",
                   "funasr_triton_tools": tmp_path / "fb", "loadtest": tmp_path / "lt"})
    packages, _ = wrong_way(graph)
    assert packages == {("funasr_triton_export.wrong", "funasr_triton_tools.bench"),
                        ("funasr_triton_tools.wrong", "loadtest.run")}


def test_the_model_code_imports_none_of_ours(tmp_path):
    """funasr_triton_models is the leaf: an import from it into any other package of ours is wrong-way, and so
    is one from the frontend into it; the export tools may use it."""
    assert {i.target.split(".")[0] for i in ours().imports if i.importer.startswith("funasr_triton_models")} \
        <= {"funasr_triton_models"}
    files = {
        "fm/__init__.py": "",
        "fm/port.py": "from funasr_triton.audio import decode\n",       # models -> frontend
        "fm/stage.py": "from . import port\n",                          # within the package: fine
        "ft/__init__.py": "",
        "ft/audio.py": "from funasr_triton_models import port\n",       # frontend -> models
        "fx/__init__.py": "",
        "fx/verify.py": "from funasr_triton_models.port import x\n",    # tools -> models: fine
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = Graph({"funasr_triton": tmp_path / "ft", "funasr_triton_export": tmp_path / "fx",
                   "loadtest": tmp_path / "lt", "funasr_triton_models": tmp_path / "fm"})
    packages, _ = wrong_way(graph)
    assert packages == {("funasr_triton_models.port", "funasr_triton.audio"),
                        ("funasr_triton.audio", "funasr_triton_models.port")}
