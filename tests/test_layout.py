"""The package's layout rules, read from the source with ``ast`` (parsed, not imported: a second to run): no
module reaches into another module's private names, and the image and sample statuses are spelled once, in
:class:`edge.vocabulary.Status` and :class:`edge.vocabulary.SampleStatus`."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from edge.store.schema import images, samples
from edge.vocabulary import SAMPLE_STATUSES, STATUSES

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge"

# Known exceptions, each with why; an entry that no longer matches fails the test, so a fix also removes it.
# (module, private name) -> why it is allowed for now.
PRIVATE_IMPORTS_ALLOWED: Dict[Tuple[str, str], str] = {}

# (module, status word) -> why that module may still spell the word out; an entry whose module no longer
# has the word fails the test, so the list only holds what is still true.
STATUS_WORDS_ALLOWED: Dict[Tuple[str, str], str] = {
    ("edge.vocabulary", "classified"): "where the words are defined",
    ("edge.vocabulary", "unreadable"): "where the words are defined",
    ("edge.vocabulary", "rejected"): "where the words are defined",
    ("edge.vocabulary", "duplicate"): "where the words are defined",
    ("edge.web.views", "unreadable"): "a review-page count of fields without a label (unreadable or rejected)",
}

# (module, sample status word) -> why that module may still spell the word out; same rules as above.
SAMPLE_STATUS_WORDS_ALLOWED: Dict[Tuple[str, str], str] = {
    ("edge.vocabulary", "collecting"): "where the words are defined",
    ("edge.vocabulary", "ready"): "where the words are defined",
    ("edge.vocabulary", "signed"): "where the words are defined",
    ("edge.web.routes", "signed"): "the ?done= notice key after a sign-off (NOTICES), not the sample's status",
}


def modules() -> Iterator[Tuple[str, Path, ast.Module]]:
    for path in sorted(EDGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").is_file()


def _is_module(module: str) -> bool:
    return _is_package(module) or ROOT.joinpath(*module.split(".")).with_suffix(".py").is_file()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(module: str, tree: ast.Module) -> List[Tuple[int, str, str]]:
    """(line, other module, private name) for every ``from other import _name`` and every ``alias._name``
    where ``alias`` is another edge module imported here."""
    out: List[Tuple[int, str, str]] = []
    aliases: Dict[str, str] = {}  # local name -> edge module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _absolute(module, node)
            for a in node.names:
                if src != module and _private(a.name):
                    out.append((node.lineno, src, a.name))
                sub = f"{src}.{a.name}"
                if src.startswith("edge") and _is_module(sub):
                    aliases[a.asname or a.name] = sub
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("edge"):
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:  # `import edge.x.y` binds `edge`; the attribute chain names the module
                        aliases.setdefault("edge", "edge")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = _dotted(node.value, aliases)
            if target and target != module and _is_module(target):
                out.append((node.lineno, target, node.attr))
    return out


def _dotted(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value, aliases)
        return f"{head}.{node.attr}" if head else None
    return None


def test_no_module_imports_another_modules_private_names():
    found = {}
    for module, path, tree in modules():
        for line, src, name in private_uses(module, tree):
            found.setdefault((module, name), []).append(f"{path.relative_to(ROOT)}:{line} uses {src}.{name}")
    bad = [w for key, where in sorted(found.items()) if key not in PRIVATE_IMPORTS_ALLOWED for w in where]
    assert not bad, "private names used across modules (make them public or move them):\n" + "\n".join(bad)
    stale = sorted(set(PRIVATE_IMPORTS_ALLOWED) - set(found))
    assert not stale, f"fixed, remove from PRIVATE_IMPORTS_ALLOWED: {stale}"


def test_the_checker_sees_private_imports(tmp_path):
    """The rule above would pass vacuously if the parser missed the forms it looks for."""
    src = (
        "from edge.export.merge import _x, y\n"
        "from .window import _fmt\n"
        "from edge.report import window\n"
        "import edge.store.schema as schema\n"
        "import edge.store.migrations\n"
        "window._day_start(1); schema._hidden; edge.store.migrations._where(c); window.__name__\n"
    )
    got = sorted((m, n) for _, m, n in private_uses("edge.report.query", ast.parse(src)))
    assert got == [
        ("edge.export.merge", "_x"),
        ("edge.report.window", "_day_start"),
        ("edge.report.window", "_fmt"),
        ("edge.store.migrations", "_where"),
        ("edge.store.schema", "_hidden"),
    ]


def status_words(tree: ast.Module, words: Tuple[str, ...] = STATUSES) -> Iterator[Tuple[int, str]]:
    """Every string constant that is one of ``words``, except a folder name (``Path("rejected")``)."""
    folders = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path"
        for arg in node.args
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words:
            if id(node) not in folders:
                yield node.lineno, node.value


def _literal_words(words: Tuple[str, ...]) -> Dict[Tuple[str, str], List[str]]:
    found: Dict[Tuple[str, str], List[str]] = {}
    for module, path, tree in modules():
        for line, word in status_words(tree, words):
            found.setdefault((module, word), []).append(f"{path.relative_to(ROOT)}:{line} {word!r}")
    return found


@pytest.mark.parametrize(
    "words, allowed, enum",
    [(STATUSES, STATUS_WORDS_ALLOWED, "Status"), (SAMPLE_STATUSES, SAMPLE_STATUS_WORDS_ALLOWED, "SampleStatus")],
    ids=["image", "sample"],
)
def test_statuses_are_spelled_only_in_the_vocabulary(words, allowed, enum):
    found = _literal_words(words)
    bad = [w for key, where in sorted(found.items()) if key not in allowed for w in where]
    assert not bad, f"status words as literals (use edge.vocabulary.{enum}):\n" + "\n".join(bad)
    stale = sorted(set(allowed) - set(found))
    assert not stale, f"fixed, remove from the allow-list: {stale}"


def test_templates_compare_statuses_with_the_vocabulary():
    """Templates get ``Status`` and ``SampleStatus`` from create_app; a quoted status word in a template's code
    (``{% %}``, ``{{ }}``) is a second spelling. A CSS class or id named like a status (``class="unreadable"``,
    ``id="signed"``) is HTML."""
    code = re.compile(r"\{[{%](.*?)[%}]\}")
    quoted = re.compile(r"""['"](""" + "|".join(STATUSES + SAMPLE_STATUSES) + r""")['"]""")
    bad = [
        f"{p.relative_to(ROOT)}:{i} {m.group(0)}"
        for p in sorted((EDGE / "web" / "templates").glob("*.html"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        for tag in code.finditer(line)
        for m in quoted.finditer(tag.group(1))
    ]
    assert not bad, "\n".join(bad)


def test_the_status_check_constraint_lists_exactly_the_vocabulary():
    """The CHECK constraint spells the words out (it is the DDL of databases in the field); it must name the
    same statuses as :class:`edge.vocabulary.Status`, or a new status needs a migration first."""
    (check,) = [c for c in images.constraints if getattr(c, "name", None) == "ck_images_status"]
    assert sorted(re.findall(r"'([^']+)'", str(check.sqltext))) == sorted(STATUSES)


def test_the_sample_status_check_constraint_lists_exactly_the_vocabulary():
    """As for images: the samples' CHECK constraint names the same words as :class:`edge.vocabulary.SampleStatus`."""
    (check,) = [c for c in samples.constraints if getattr(c, "name", None) == "ck_samples_status"]
    assert sorted(re.findall(r"'([^']+)'", str(check.sqltext))) == sorted(SAMPLE_STATUSES)
