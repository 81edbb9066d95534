"""Import a page's pure helpers without running the page (pages call main() at import)."""
import ast
from pathlib import Path

from conftest import ROOT


def _load_functions(page: str, names: list[str]) -> dict:
    source = (ROOT / "pages" / f"{page}.py").read_text()
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) or
            (isinstance(n, ast.FunctionDef) and n.name in names) or isinstance(n, ast.Assign)]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), page, "exec"), namespace)
    return namespace


def heatmap_frame_for(root: Path):
    from healcore.results import cells, load_runs

    from healcore.charts import heatmap_frame

    return heatmap_frame(cells(load_runs(root)), "f1")
