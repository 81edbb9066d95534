"""Import a page's pure helpers without running the page (pages call main() at import)."""
import ast

from conftest import ROOT


def page_functions(page: str, names: list[str]) -> dict:
    """The named top-level functions of pages/<page>.py (with the page's imports and constants)."""
    source = (ROOT / "pages" / f"{page}.py").read_text()
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign)) or
            (isinstance(n, ast.FunctionDef) and n.name in names)]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), page, "exec"), namespace)
    return namespace
