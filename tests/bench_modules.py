"""benchmarks/ scripts loaded as modules, for the tests that check them (benchmarks/ is not a package)."""
import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name_or_path: str) -> ModuleType:
    """benchmarks/<name>.py, or the .py file at a path, as a fresh module named after its file."""
    path = Path(name_or_path) if str(name_or_path).endswith(".py") else BENCHMARKS / f"{name_or_path}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
