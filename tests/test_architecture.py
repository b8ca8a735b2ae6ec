"""The layering that ARCHITECTURE.md states holds for every import of the package (issue 15)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mecca_rllib"


def _layers() -> list[tuple[int, str]]:
    """``(layer, pattern)`` rows of ARCHITECTURE.md's layer table; a pattern is a file
    (``metrics.py``) or a folder (``data/``) relative to the package (``tune_configs/`` to the repo)."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        m = re.match(r"\| (\d+) \| [^|]+ \| (.+) \|$", line)
        if m:
            modules = re.sub(r"\([^)]*\)", "", m.group(2))  # notes in brackets name no layer
            rows += [(int(m.group(1)), p) for p in re.findall(r"`([\w/]+(?:\.py|/))`", modules)]
    assert len(rows) > 15, "ARCHITECTURE.md's layer table was not found"
    return rows


LAYERS = _layers()


def layer_of(rel: str) -> int | None:
    """The layer of a path relative to the repo; a file row beats its folder's row."""
    rel = rel.removeprefix("mecca_rllib/")
    files = [n for n, p in LAYERS if p == rel]
    folders = sorted(((len(p), n) for n, p in LAYERS if p.endswith("/") and rel.startswith(p)), reverse=True)
    return files[0] if files else (folders[0][1] if folders else None)


def module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports(path: Path):
    """``(line, target file, imported name or None)`` for every ``mecca_rllib`` import."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mecca_rllib":
            for alias in node.names:
                sub = module_file(f"{node.module}.{alias.name}")
                yield node.lineno, sub or module_file(node.module), None if sub else alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mecca_rllib":
                    yield node.lineno, module_file(alias.name), None


def sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "tune_configs").glob("*.py"))
    return [f for f in files if f != PACKAGE / "__init__.py" and f.name != "_version.py"]


def test_every_module_has_a_layer():
    missing = [str(f.relative_to(REPO)) for f in sources() if layer_of(str(f.relative_to(REPO))) is None]
    assert not missing, f"modules without a row in ARCHITECTURE.md's layer table: {missing}"


def test_no_module_imports_from_a_later_layer_or_a_private_name():
    problems = []
    for path in sources():
        rel = str(path.relative_to(REPO))
        own = layer_of(rel)
        for line, target, name in imports(path):
            if target is None or target == PACKAGE / "__init__.py":
                continue  # the package root (registration) is everyone's entry point
            target_rel = str(target.relative_to(REPO))
            theirs = layer_of(target_rel)
            if theirs is not None and theirs > own:
                problems.append(f"{rel}:{line} (layer {own}) imports {target_rel} (layer {theirs})")
            if name and name.startswith("_") and not name.startswith("__") and target != path:
                problems.append(f"{rel}:{line} imports the private {name} from {target_rel}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_violation():
    """The checker itself: a data module importing the session would be caught."""
    assert layer_of("mecca_rllib/data/nifti.py") < layer_of("mecca_rllib/session.py")
    assert layer_of("mecca_rllib/data/errors.py") == 0 and layer_of("mecca_rllib/data/cache.py") == 1
    assert layer_of("tune_configs/_common.py") == layer_of("mecca_rllib/train.py")
