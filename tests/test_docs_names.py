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


#: How pages quote a parameter's default: "`name` (default 2)" or "`name=2` (the default)".
QUOTED_DEFAULT = re.compile(
    r"`([a-z_]+)` \(default:? `?([^`);:]+?)`?(?:[);:]|, )|`([a-z_]+)=([^`]+)` \(the default\)"
)
#: Words pages use for a default of None.
NONE_WORDS = {"none", "off"}


def _same_default(quoted: str, default) -> bool:
    text = quoted.strip().strip("\"'").replace(",", "")
    if default is None:
        return text.lower() in NONE_WORDS
    if isinstance(default, bool):
        return text.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    return text == str(default)


def test_defaults_quoted_in_user_pages_are_the_parameters_defaults():
    wrong = []
    for page in _user_pages():
        for match in QUOTED_DEFAULT.finditer(page.read_text()):
            name = match.group(1) or match.group(3)
            quoted = match.group(2) or match.group(4)
            if name in params.BY_NAME and not _same_default(quoted, params.BY_NAME[name].default):
                wrong.append(
                    f"{page.relative_to(ROOT)}: `{name}` quoted as {quoted!r}, "
                    f"default {params.BY_NAME[name].default!r}"
                )
    assert not wrong, "; ".join(wrong)


def test_a_quoted_default_that_differs_is_caught():
    assert _same_default("2,000", 2000) and _same_default("off", None)
    assert not _same_default("4", 2.0) and not _same_default("auto", 0.0)
    found = QUOTED_DEFAULT.findall(
        "`guidance_scale` (default 4) and `anchor_strength=1` (the default)"
    )
    assert [(m[0] or m[2], m[1] or m[3]) for m in found] == [
        ("guidance_scale", "4"),
        ("anchor_strength", "1"),
    ]
