"""The documentation cannot go stale: every Python example of the README and of docs/ runs, and every public
class, function and method of sam2_jax says what it does."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import sam2_jax

ROOT = Path(__file__).resolve().parents[1]
# docs/video_examples.md runs in tests/test_video_examples.py, which also checks what it prints.
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "video_examples.md")]


def python_examples(page: Path) -> list[str]:
    """The ```python blocks of a page, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", [p for p in PAGES if python_examples(p)], ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    """The blocks of one page run in order in one namespace, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"example_{page.stem}"}
    for i, block in enumerate(python_examples(page)):
        exec(compile(block, f"{page.name} example {i + 1}", "exec"), namespace)


def public_objects():
    """(qualified name, object) of every public class, function, method and property defined in sam2_jax."""
    modules = [sam2_jax] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(
        sam2_jax.__path__, "sam2_jax.") if not any(part.startswith("_") for part in m.name.split("."))]
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr != "__call__":
                        continue
                    member = member.fget if isinstance(member, property) else member
                    member = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if inspect.isfunction(member) and member.__qualname__.startswith(obj.__qualname__):
                        yield f"{module.__name__}.{name}.{attr}", member


def test_every_public_name_has_a_docstring():
    names = dict(public_objects())
    missing = sorted(name for name, obj in names.items() if not (inspect.getdoc(obj) or "").strip())
    print(f"{len(names)} public names, {len(names) - len(missing)} with docstrings")
    assert not missing, f"{len(missing)} of {len(names)} public names have no docstring: {', '.join(missing)}"
