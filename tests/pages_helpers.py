"""Helpers of the page tests: open a page as a user gets there (AppTest), read what it says, and import a page's
pure helpers without running the page."""
from streamlit.testing.v1 import AppTest

from conftest import ROOT

TITLES = ["Home", "Launch", "Runs", "Grid heatmaps", "Degradation curves", "Healing over epochs",
          "Where healing happens", "Failures and surprises", "Embeddings", "Run detail", "Export"]


def open_page(title: str, query: dict | None = None) -> AppTest:
    """A page opened the way a user gets there: app.py first, then the page (with a URL's query, if any)."""
    from dashboard.common import page

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if title != "Home":
        at.switch_page(page(title))
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def launch_builder(model: str, store, monkeypatch) -> AppTest:
    """Launch's grid builder opened on a store, with one model (a folder the dashboard may read) chosen."""
    monkeypatch.setenv("HEALCORE_RUNS", str(store))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", model)
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label == "Models").set_value([model]).run()
    return at


def texts(at: AppTest) -> str:
    """Everything a page says in words (markdown, captions and alerts), one element per line."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in getattr(at, kind)]
    return "\n".join(map(str, parts))


def page_functions(page: str, names: list[str]) -> dict:
    """The named functions of pages/<page>.py, imported as a module (a page runs main() only as __main__)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"page_{page}", ROOT / "pages" / f"{page}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in names}
