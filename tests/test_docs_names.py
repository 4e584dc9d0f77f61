"""User pages name only what exists: a parameter, attribute, function or option that the code
lost (renamed or removed) fails here instead of living on in the README and the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from scld_aug import params

ROOT = Path(__file__).resolve().parents[1]
#: Pages that record history (what earlier versions did) rather than describe this one.
HISTORY = {"experiments.md", "CHANGELOG.md"}
#: Names of data, not of code: cell types of the shipped data, metrics a recipe logs.
DATA_WORDS = {"t_cell", "macro_f1_fold"}
#: A code-like word in backticks: snake_case, optionally with a trailing underscore (fitted
#: attributes) and a value (``name=value``).
CODE_WORD = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+_?)(?:=[^`]*)?`")


def _code_names() -> set[str]:
    """Every name the library, the recipes and the evaluation scripts define or use."""
    names = set(params.BY_NAME) | DATA_WORDS
    for folder in ("scld_aug", "recipes", "evaluation"):
        for path in (ROOT / folder).rglob("*.py"):
            names.add(path.stem)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Name):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.arg):
                    names.add(node.arg)
                elif isinstance(node, ast.keyword) and node.arg:
                    names.add(node.arg)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Dict):
                    # Keys of tables such as the panel's datasets and metric names.
                    names |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    return {n for n in names if isinstance(n, str)}


def _user_pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pages += sorted((ROOT / "recipes").glob("*.md"))
    return [p for p in pages if "_build" not in p.parts and p.name not in HISTORY]


def test_user_pages_name_only_code_that_exists():
    known = _code_names()
    unknown = {}
    for page in _user_pages():
        for match in CODE_WORD.finditer(page.read_text()):
            if match.group(1) not in known:
                unknown.setdefault(match.group(1), set()).add(str(page.relative_to(ROOT)))
    assert not unknown, (
        "user pages name things the code does not have (renamed or removed?): "
        + "; ".join(f"`{name}` in {sorted(pages)}" for name, pages in sorted(unknown.items()))
    )


def test_the_check_catches_a_removed_parameter():
    # The names of the sampling options the library removed are not code any more.
    known = _code_names()
    assert {"latent_noise", "latent_interpolation", "guidance_scales_"}.isdisjoint(known)
    assert {"guidance_scale", "kl_weight", "sampling_strategy_"} <= known


def test_the_developer_guide_says_what_every_module_owns():
    """Its table names every module and subpackage of scld_aug, and nothing else of it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    owns = text[text.index("## What each module owns") :].split("\n## ")[0]
    listed = set(re.findall(r"^\| `([A-Za-z_]+(?:\.py|/))` \|", owns, flags=re.M))
    package = ROOT / "scld_aug"
    modules = {
        p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    } | {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert listed - {"recipes/", "evaluation/"} == modules, (
        f"missing from the table: {sorted(modules - listed)}; "
        f"in the table but not in scld_aug: {sorted(listed - modules - {'recipes/', 'evaluation/'})}"
    )
