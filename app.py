"""giflens: the editors' app. Start it with `giflens app [--data-dir DIR]` or `streamlit run app.py`.

The data folder and database come from the settings (`GIFLENS_DATA_DIR`, `GIFLENS_DATABASE_URL`).
Browsing needs nothing; every change needs an editor, whom the audit log records: with an
`[auth]` section in Streamlit's secrets (.streamlit/secrets.toml) editors log in through OIDC
(`st.login`) and the identity provider names them; otherwise they type a name (and the password
when `GIFLENS_EDITOR_PASSWORD` is set).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st
from sqlalchemy.orm import Session, sessionmaker
from streamlit.navigation.page import StreamlitPage

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `streamlit run` from elsewhere: the packages live beside this file
    sys.path.insert(0, str(ROOT))

from explorer.projection_jobs import warm_up  # noqa: E402
from labeling.audit import undo_last  # noqa: E402
from labeling.errors import StoreError  # noqa: E402
from labeling.pages.common import (current_editor, database_label, escape_markdown, flash, forget_tick_versions,  # noqa: E402
                                   get_settings, get_store, oidc_configured, oidc_providers, password_required, plain,
                                   result_message, show_error, show_flash, sign_in, sign_out, undo_offered)
from labeling.queries import events_frame, face_count  # noqa: E402
from models.settings import Settings  # noqa: E402

PAGES = "labeling/pages"
EXPLORER_PAGES = "explorer/pages"


def _navigation() -> StreamlitPage:
    """The pages, grouped as the sidebar shows them."""
    return st.navigation({
        "giflens": [st.Page(f"{PAGES}/home.py", title="Overview", icon=":material/dashboard:", default=True)],
        "Explore": [
            st.Page(f"{EXPLORER_PAGES}/explore.py", title="Explore", icon=":material/scatter_plot:"),
            st.Page(f"{EXPLORER_PAGES}/review.py", title="Review", icon=":material/rule:"),
            st.Page(f"{EXPLORER_PAGES}/bias.py", title="Bias audit", icon=":material/balance:"),
        ],
        "Curate": [
            st.Page(f"{PAGES}/classes.py", title="Classes", icon=":material/badge:"),
            st.Page(f"{PAGES}/tags.py", title="Tags", icon=":material/sell:"),
        ],
        "Data": [
            st.Page(f"{PAGES}/ingest.py", title="Ingest", icon=":material/upload:"),
            st.Page(f"{PAGES}/export.py", title="Export", icon=":material/download:"),
        ],
    })


def _undo_last(store: sessionmaker[Session], shown: int | None = None) -> None:
    """Runs before the page (a button callback), so the page already shows the restored state; the
    versions Review's pick tables recorded predate this editor's own undo and are forgotten
    (`forget_tick_versions`), so a still-ticked face is not refused as changed by the editor themself.
    shown: the operation the button offered to undo; when a colleague undid it meanwhile, `undo_last`
    refuses rather than take back an older one the editor never saw (the rerun offers that one)."""
    editor = current_editor()
    if not editor:
        flash("An editor name is required before any change.", "error")
        return
    try:
        flash(result_message(undo_last(store, editor, expected=shown)))
    except StoreError as exc:
        flash(f"Cannot undo: {exc}", "error")
        return
    forget_tick_versions()


def _oidc_login(provider: str | None) -> None:
    """Hand over to the identity provider (the browser is redirected; st.user is set on return).
    A configuration Streamlit refuses (Authlib missing, [auth] incomplete) is shown, not raised."""
    from streamlit.errors import StreamlitAuthError

    try:
        st.login(provider)
    except StreamlitAuthError as exc:
        st.error(f"Log in is not available: {plain(str(exc))}")


def _sidebar(settings: Settings) -> None:
    """Where the data lives, and who is editing: sign in, log in or out."""
    with st.sidebar:
        st.caption(f"Data folder `{settings.data_dir}`  \nDatabase `{database_label(settings)}`")
        editor = current_editor()
        if oidc_configured():
            if editor or st.user.get("is_logged_in"):
                if editor:
                    st.markdown(f"Editor: **{plain(editor)}**")  # a name, never a link or emphasis
                else:  # a token without a usable name: changes stay refused, say why
                    st.warning("Your login carries no name or e-mail the audit log can record; ask for the "
                               "identity provider to include the `name` or `email` claim.")
                if st.button("Log out", key="oidc_logout"):
                    st.logout()
            else:
                st.write("Log in to make changes (browsing needs no login).")
                for provider in oidc_providers():
                    label = f"Log in with {plain(provider)}" if provider else "Log in"
                    if st.button(label, key=f"oidc_login_{provider or 'default'}"):
                        _oidc_login(provider)
        elif editor:
            st.markdown(f"Editor: **{plain(editor)}**")  # a name, never a link or emphasis
            st.button("Sign out", key="sign_out", on_click=sign_out)
        else:
            with st.form("sign_in_form"):
                st.write("Sign in to make changes (browsing needs no name).")
                name = st.text_input("Editor name", key="sign_in_name")
                password = (st.text_input("Password", type="password", key="sign_in_password")
                            if password_required() else None)
                if st.form_submit_button("Sign in"):
                    try:
                        sign_in(name, password)
                    except StoreError as exc:
                        show_error(exc)
                    else:
                        st.rerun()


# Characters of an operation's summary the sidebar shows (the rest on hover): an experts-voting run's summary
# ran to six lines, and eight such entries pushed Undo last below the fold.
SIDEBAR_SUMMARY_CHARS = 120


def short_summary(summary: str, limit: int = SIDEBAR_SUMMARY_CHARS) -> str:
    """`summary` cut at a word to `limit` characters with an ellipsis, whole when it fits."""
    if len(summary) <= limit:
        return summary
    cut = summary[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _recent_operations(store: sessionmaker[Session]) -> None:
    """The signed-in editor's last operations, below every page, with their undo above them, where a long
    list cannot push it out of sight."""
    editor = current_editor()
    if editor:
        with st.sidebar:
            st.subheader("Your recent operations")
            mine = events_frame(store, editor, limit=8)
            left = None if mine.empty else undo_offered(store, editor)
            st.button("Undo last", key="undo_last", on_click=_undo_last, args=(store, left), disabled=left is None,
                      help=f"Undo your most recent operation that is not undone yet (#{left})" if left is not None else
                      "Nothing of yours is left to undo (only undos, records such as ingest batches, or "
                      "operations already undone)")
            if len(mine):  # one short line each: a table is cut off in a sidebar this narrow
                for event_id, summary, undone_by in zip(mine["event_id"], mine["summary"], mine["undone_by"]):
                    text = str(summary)
                    line = f"**#{event_id}** {escape_markdown(short_summary(text))}"
                    st.caption(f"~~{line}~~ (undone by #{int(undone_by)})" if pd.notna(undone_by) else line,
                               help=escape_markdown(text) if len(text) > SIDEBAR_SUMMARY_CHARS else None)
            else:
                st.caption("None yet.")


def main() -> None:
    st.set_page_config(page_title="giflens", page_icon=":material/face:", layout="wide")
    navigation = _navigation()
    settings = get_settings()
    store = get_store()
    # UMAP's kernels compile in the worker while the editor finds their way to Explore. Asked once per
    # session, not on every rerun: the store's face count is a query, and the warm-up happens once anyway.
    if settings.umap_warm_up and not st.session_state.get("_umap_warm_up_asked"):
        st.session_state["_umap_warm_up_asked"] = True
        warm_up(face_count(store))
    _sidebar(settings)
    # The flash lives in a container that is always drawn, even empty: Streamlit keys the page's elements
    # by position, so a message that comes and goes before the page would shift every element of the page
    # and the browser would forget their state (an open Filters expander collapsed on the next click).
    with st.container():
        show_flash()
    navigation.run()
    _recent_operations(store)


# `streamlit run` (and AppTest) run this file as __main__. The UMAP worker process, started with
# "spawn", imports it again as __mp_main__: there it must only define, not open the store or start
# another worker.
if __name__ == "__main__":
    main()
