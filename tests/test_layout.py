import ast
import builtins
import subprocess
import sys

from cifarlab import REPO

LONGEST = 60  # lines a function of the package or an entry point may take


def test_no_function_of_the_package_or_an_entry_point_is_longer_than_a_screen():
    sources = [REPO / "train.py", REPO / "app.py", *(REPO / "cifarlab").rglob("*.py")]
    lengths = {f"{path.relative_to(REPO)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
               for path in sources for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert len(lengths) > 300 and {name: n for name, n in lengths.items() if n > LONGEST} == {}


def imported_modules(path):
    """Every module name an import statement of a source file names."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
            yield from (alias.name for alias in node.names)


def test_nothing_in_the_package_imports_the_benchmarks_or_their_load_generator():
    sources = [REPO / "train.py", REPO / "app.py", *(REPO / "cifarlab").rglob("*.py")]
    found = {f"{path.relative_to(REPO)}: {name}" for path in sources for name in imported_modules(path)
             if name.startswith("benchmarks") or "loadtest" in name}
    assert found == set()


def package_classes():
    """{class name: [base names]} of every class the package defines (names are unique across it)."""
    classes = {}
    for path in (REPO / "cifarlab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
    return classes


def test_every_exception_of_the_package_derives_from_its_one_base():
    classes = package_classes()
    builtin = {name for name, value in vars(builtins).items()
               if isinstance(value, type) and issubclass(value, BaseException)}

    def ancestors(name, seen=()):
        for base in classes.get(name, []):
            yield base
            if base not in seen:  # `class Handler(server.Handler)` names its base after itself
                yield from ancestors(base, (*seen, name, base))

    exceptions = {name for name in classes if any(base in builtin for base in ancestors(name))}
    assert len(exceptions) >= 17
    assert {name for name in exceptions - {"CifarlabError"} if "CifarlabError" not in set(ancestors(name))} == set()


CLOCKS = {"monotonic", "perf_counter", "time", "monotonic_ns", "perf_counter_ns", "time_ns"}


def reads_a_clock_or_a_duration(node):
    """True when an assert's expression calls a clock or names a latency, elapsed time or seconds taken."""
    for part in ast.walk(node):
        if isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute) and part.func.attr in CLOCKS:
            return True
        if isinstance(part, ast.Name) and part.id in ("latency", "elapsed", "seconds", "took"):
            return True
    return False


def test_no_test_asserts_on_wall_clock_time():  # a loaded machine fails them; latency lives in benchmarks/
    timed = [f"{path.name}:{node.lineno}" for path in (REPO / "tests").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Assert) and reads_a_clock_or_a_duration(node.test)]
    assert timed == []


def test_the_shared_fixtures_import_neither_keras_nor_tensorflow():  # a test without a model starts in a second
    code = "import sys, tests.conftest; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_no_module_of_the_package_sets_up_tensorflow_between_its_imports():  # entry points do (train.py, quiet)
    sources = [REPO / "train.py", REPO / "app.py", *(REPO / "cifarlab").rglob("*.py")]
    assert [str(path.relative_to(REPO)) for path in sources if "noqa: E402" in path.read_text()] == []


def test_the_apps_parts_are_reached_through_one_accessor():  # web.context.parts(), not app.extensions["..."]
    sources = [REPO / "app.py", *(REPO / "cifarlab").rglob("*.py")]
    lookups = {f"{path.relative_to(REPO)}: {line.strip()}" for path in sources
               for line in path.read_text().splitlines() if "extensions[" in line}
    assert lookups == {"cifarlab/web/context.py: return (app or current_app).extensions[KEY]",
                       "cifarlab/web/factory.py: app.extensions[context.KEY] = context.Parts()  # each init_app below "
                       "sets its own part"}
