"""Run detail: config, status, log tail, metrics per epoch, confusion matrix; a failed run shows its error."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore import charts
from healcore.errors import StoreError
from healcore.store import RunStore


def main() -> None:
    st.title("Run detail")
    root, runs = common.load_nonempty()
    ids = runs["run_id"].tolist()
    wanted = st.query_params.get("run")
    run_id = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0)
    st.query_params["run"] = run_id
    store = RunStore(root)
    try:
        run_dir = store.path(run_id)
    except StoreError as err:
        st.error(str(err))
        return
    status = store.status(run_id)
    state = status.get("effective_state")
    c = st.columns(4)
    c[0].metric("State", state)
    summary = store.summary(run_id) or {}
    best = (summary.get("best") or {}).get("test") or {}
    c[1].metric("Best test F1", f"{best['f1_weighted']:.2f}" if best else "—")
    c[2].metric("Probe F1 before fine-tuning", f"{summary['probe']['f1_weighted']:.2f}" if summary.get("probe") else "—")
    c[3].metric("Best epoch", summary.get("best_epoch") or "—")
    if state == "failed":
        st.error(f"Failed: {status.get('error')}")
        with st.expander("Traceback"):
            st.code(status.get("traceback") or "", language="text")
    tabs = st.tabs(["Metrics", "Confusion matrix", "Config", "Status", "Log"])
    rows = store.epochs(run_id)
    with tabs[0]:
        if rows:
            table = pd.DataFrame([{"epoch": r["epoch"], "train loss": r["train_loss"],
                                   **{f"{s} {k}": r[s][k] for s in ("validation", "test") if s in r
                                      for k in ("accuracy", "f1_weighted", "f1_macro")},
                                   "train s": r.get("train_s"), "eval s": r.get("eval_s")} for r in rows])
            st.dataframe(table, hide_index=True, width="stretch")
        else:
            st.caption("No finished epoch yet.")
    with tabs[1]:
        if rows and summary.get("classes"):
            epoch = st.select_slider("Epoch", [r["epoch"] for r in rows], value=summary.get("best_epoch") or rows[-1]["epoch"])
            row = next(r for r in rows if r["epoch"] == epoch)
            st.altair_chart(charts.confusion(row["test"]["confusion"], summary["classes"]))
        else:
            st.caption("Shown once the run has finished an epoch.")
    with tabs[2]:
        st.json(store.config(run_id) or {})
        if summary:
            st.json({k: summary[k] for k in ("corruption", "data", "params", "timing", "device") if k in summary})
    with tabs[3]:
        st.json({k: v for k, v in status.items() if k != "traceback"})
    with tabs[4]:
        log = run_dir / "log.txt"
        st.code("\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.is_file() else "(no log yet)",
                language="text")


main()
