"""What every page shares: the settings, the store, the editor's identity, errors and messages.

Pages (labeling's and explorer's) import from here:

    store, editor = get_store(), require_editor()
    write(lambda store, editor: rename_class(store, class_id, name, editor))

`write` is the one way a page changes the store: it refuses without an editor name, runs the
operation (which audits it), shows a refusal (ValidationError, NotFoundError, ConflictError,
UndoError) with st.error instead of a traceback, and on success reruns the page so every
table, the sidebar's recent operations included, shows the new state.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from numbers import Integral
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd
import streamlit as st
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from embeddings.pipeline import DATA_UPLOADS
from labeling.audit import _chunks, last_undoable
from labeling.errors import ConflictError, NotFoundError, StoreError, UndoError, ValidationError, utc_text
from labeling.schema import AuditEntity, AuditEvent, CelebrityClass
from labeling.validation import check_editor, class_name_key, search_key
from models.settings import Settings

EDITOR_KEY = "editor"
ALIKE_WARNED_KEY = "class_lookalikes_warned"  # form -> (search key, class ids) the last look-alike warning named
FLASH_KEY = "_giflens_flash"
VERSIONS_KEY = "versions_seen"  # per page key: the row versions its last run drew (versions_seen)
TICK_VERSIONS = "__tick_versions"  # a pick table's key + this: per ticked row, its faces' versions at the tick
DRAWN = "__drawn"  # a pick table's key + this, under VERSIONS_KEY: the versions of every row it drew last run
PASSWORD_ENV = "GIFLENS_EDITOR_PASSWORD"
UPLOADS = DATA_UPLOADS  # under the data folder: the one folder of it an ingest walks


# -- settings and store ------------------------------------------------------------------
def get_settings() -> Settings:
    """The settings from the environment (`GIFLENS_*`), read on every run: cheap, and never stale."""
    return Settings()


@st.cache_resource(show_spinner=False)
def _store_for(url: str) -> sessionmaker[Session]:
    from labeling.db import open_store

    return open_store(url)


def get_store() -> sessionmaker[Session]:
    """The session factory of the settings' database (one per URL for the whole server)."""
    return _store_for(get_settings().resolved_database_url)


def database_label(settings: Settings) -> str:
    """The database URL as shown to people: never with its password."""
    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


@st.cache_resource(show_spinner="Loading the models ...")
def _pipeline_for(key: str, _settings: Settings):
    from embeddings.pipeline import IngestPipeline

    return IngestPipeline(_settings)


def get_pipeline(settings: Settings):
    """The ingest pipeline (its networks load on first use) shared by every session with these settings."""
    return _pipeline_for(settings.model_dump_json(), settings)


# -- the editor ----------------------------------------------------------------------------
# Two ways to say who you are. With an `[auth]` section in Streamlit's secrets (st.secrets, e.g.
# .streamlit/secrets.toml) editors log in with OIDC through Streamlit's own st.login and the name
# comes from the identity provider (st.user): nobody can type someone else's name. Without it,
# editors type their name (and the shared password when GIFLENS_EDITOR_PASSWORD is set).
USER_NAME_CLAIMS = ("name", "email", "preferred_username")  # first one present names the editor


def _auth_section() -> Mapping[str, Any] | None:
    """The `[auth]` secrets section, or None when OIDC login is not configured (no secrets at all
    is the common case and not an error: st.secrets raises a FileNotFoundError for it)."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # StreamlitSecretNotFoundError: no secrets file, or one that does not parse
        return None
    return section if isinstance(section, Mapping) and section else None


def oidc_configured() -> bool:
    return _auth_section() is not None


def oidc_providers() -> list[str | None]:
    """What st.login can be called with: the named providers (`[auth.<name>]` sub-sections), or
    [None] for the single unnamed provider configured in `[auth]` itself."""
    section = _auth_section() or {}
    named = [name for name, value in section.items() if isinstance(value, Mapping)]
    return named or [None]


def oidc_editor() -> str | None:
    """The logged-in user's name (or e-mail) from the identity token, None when not logged in."""
    if not st.user.get("is_logged_in"):
        return None
    for claim in USER_NAME_CLAIMS:
        value = st.user.get(claim)
        if isinstance(value, str) and value.strip():
            try:
                return check_editor(value)
            except ValidationError:  # e.g. over-long: try the next claim
                continue
    return None


def password_required() -> bool:
    return bool(os.environ.get(PASSWORD_ENV))


def check_password(given: str | None) -> bool:
    expected = os.environ.get(PASSWORD_ENV)
    if not expected:
        return True
    return hmac.compare_digest((given or "").encode(), expected.encode())


def sign_in(name: str, password: str | None = None) -> str:
    """Set the session's editor; raises ValidationError for a bad name or a wrong password, and
    when OIDC login is configured (then the identity provider names the editor, not a form)."""
    if oidc_configured():
        raise ValidationError("this app uses single sign-on: log in with the button in the sidebar")
    editor = check_editor(name)
    if not check_password(password):
        raise ValidationError("wrong password")
    st.session_state[EDITOR_KEY] = editor
    return editor


def sign_out() -> None:
    st.session_state.pop(EDITOR_KEY, None)


def current_editor() -> str | None:
    """Who the audit log will name: the OIDC user when login is configured, else the typed name."""
    if oidc_configured():
        return oidc_editor()
    return st.session_state.get(EDITOR_KEY) or None


def undo_offered(store: sessionmaker[Session], editor: str | None) -> int | None:
    """The operation an Undo button offers this editor (`last_undoable`, undo_last's own rule), None when
    they have none or nobody is signed in. The sidebar's "Undo last" and Review's "Undo my last operation"
    carry it, so a press undoes what was shown (`undo_last`'s `expected`). Why not "any operation listed":
    once only undos, records and operations already undone are left, the button was enabled and every press
    was refused."""
    if not editor:
        return None
    with store() as session:
        return last_undoable(session, editor)


def require_editor() -> str | None:
    """The editor's name, or None after telling them a name is needed (browsing needs none). Logged in
    through OIDC without a usable name claim, "log in" would be no help: they are; the sidebar's reason
    (app.py, `_sidebar`) is given instead, in its words."""
    editor = current_editor()
    if not editor:
        if not oidc_configured():
            how = "sign in with your name in the sidebar"
        elif st.user.get("is_logged_in"):
            how = ("your login carries no name or e-mail the audit log can record; ask for the identity provider "
                   "to include the `name` or `email` claim")
        else:
            how = "log in with the sidebar's button"
        st.error(f"An editor name is required before any change: {how}. Browsing works without it.")
    return editor


# -- errors and messages -----------------------------------------------------------------------
def show_error(exc: BaseException) -> None:
    """A refusal as the editor should read it: what was refused and why, never a traceback."""
    text = plain(str(exc))
    if isinstance(exc, ConflictError):
        st.error(f"Conflict: {text}")
    elif isinstance(exc, UndoError):
        st.error(f"Cannot undo: {text}")
    elif isinstance(exc, NotFoundError):
        st.error(f"Not found: {text}")
    elif isinstance(exc, (ValidationError, StoreError)):
        st.error(f"Refused: {text}")
    else:
        st.error(f"{type(exc).__name__}: {text}")


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def escape_markdown(text: str) -> str:
    """Text shown through Streamlit's markdown as typed: a class named `*NSYNC_` or `[x](y)` is a
    name, not emphasis or a link."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


# what can make markup inside a sentence: emphasis, code, html, strike, maths, tables; an underscore only
# at a word's edge (add_class stays as it is); a bracket only where it closes a link text ("](");
# a colon only before a letter (Streamlit's :red[colour], :emoji: and :material/icon:, not "reason: why")
_INLINE_SPECIALS = re.compile(r"([\\`*<>~$|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|\](?=\()|:(?=[A-Za-z]))")


def plain(text: str) -> str:
    """A message built from names and summaries, shown through markdown as written: a tag typed as
    `**huge** [click](https://x)` stays that text, never bold or a link. Lighter than escape_markdown,
    so messages read the same where they are read raw ("add_class", "[0, 1]", "(operation 3)")."""
    return _INLINE_SPECIALS.sub(r"\\\1", text)


def keep_choice(key: str, options: list[Any]) -> bool:
    """Re-send a keyed selectbox's choice to the browser; call it before the selectbox is drawn.

    The browser hands a selectbox's choice back as the label it shows. Once the chosen option's
    label changes (a class renamed, faces moved in or out of it), the old label matches nothing
    and Streamlit falls back to the first option: the next form submitted would act on a class
    the editor never picked. A value set from the script makes the browser show, and later send,
    the current label. True when it did set it (then the box must not be given a default `index`)."""
    if key in st.session_state and st.session_state[key] in options:
        st.session_state[key] = st.session_state[key]
        return True
    return False


LOST_SUFFIX = "__lost"  # a select box's key + this: (the choice that left its options, the option it fell back to)


class Choice(NamedTuple):
    """A select box's value, and `lost`: the option the editor had chosen when it has left the options
    since they chose it, as long as they have not picked another (None otherwise). See select_choice."""

    value: Any
    lost: Any = None
    key: str = ""


CHOOSE_CLASS = "Choose the class to relabel to"  # the Relabel boxes' placeholder: they start empty (see chosen)
RELABEL_TO_NOTHING = f"{CHOOSE_CLASS}: nothing was relabeled."


def box_chosen(choice: Choice, ask: str) -> bool:
    """Whether the editor chose an option of a box drawn with no default (`index=None`); otherwise `ask`
    says what to choose and nothing is written. Why no default: Merge's and the Relabel boxes started on the
    catalog's first class ("50 Cent"), so one press merged or relabeled into a class the editor never picked."""
    if choice.value is not None:
        return True
    st.warning(ask)
    return False


def select_choice(where: Any, label: str, options: list[Any], key: str, **kwargs: Any) -> Choice:
    """A keyed st.selectbox drawn in `where` (st, a column, a form) that tells when the editor's choice
    has left its options since they made it.

    Streamlit then falls back to the default option without a word, so a button pressed afterwards
    would act on a class the editor never picked (theirs retired or merged by another editor
    meanwhile). What they chose is read before the box is drawn: the browser's value as the options
    of the run that drew it resolve it. The loss is remembered across reruns (ticking another face is
    one) until the editor picks another option, the choice is offered again (then it is chosen again),
    or a press is refused for it (refuse_lost_class, forget_lost). A renamed option stays chosen
    (keep_choice); a default `index` is passed only while the box has no value of its own, as
    Streamlit warns about a box given both."""
    memory = key + LOST_SUFFIX
    lost, fell_to = st.session_state.get(memory, (None, None))
    if lost is not None and st.session_state.get(key) != fell_to:
        lost = None  # the editor picked another option since: that one is their choice
    elif lost is not None and lost in options:
        st.session_state[key] = lost  # offered again, and nothing else picked: theirs again
        lost = None
    if keep_choice(key, options):
        kwargs.pop("index", None)
    before = st.session_state.get(key)
    value = where.selectbox(label, options, key=key, **kwargs)
    if lost is None and before is not None and before != value and before not in options:
        lost = before  # (when the option it fell back to leaves in turn, the editor's own choice stays the lost one)
    if lost is None:
        st.session_state.pop(memory, None)
    else:
        st.session_state[memory] = (lost, value)
    return Choice(value, lost, key)


def forget_lost(choice: Choice) -> None:
    """After a press was turned down for a lost choice: the next press acts on what the box shows."""
    st.session_state.pop(choice.key + LOST_SUFFIX, None)


@dataclass(frozen=True)
class Change:
    """The newest audited operation that wrote an entity, and what it wrote there (the changed columns)."""

    event_id: int
    editor: str
    operation: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime  # when (as the database hands it back: `utc_text` prints it)

    def by(self) -> str:
        """"by bob in operation 8"."""
        return f"by {self.editor} in operation {self.event_id}"


def last_change(store: sessionmaker[Session], keys: Iterable[str]) -> Change | None:
    """The newest audited operation that wrote any of these entities ("class:3", "media_tag:7:2"), None
    when none did: who moved something on under an editor's feet, read from the audit log.

    Why chunked IN queries (the newest written event per chunk of keys), not one last_write per key: a
    tag that left thousands of media is looked up over every row the page drew, and a query per key
    took seconds. Among several keys the event wrote, the change shown is the first key's as given."""
    order = list(dict.fromkeys(keys))
    with store() as session:
        per_chunk = (_newest_write(session, chunk) for chunk in _chunks(sorted(order)))
        newest = max((n for n in per_chunk if n is not None), default=None)
        if newest is None:
            return None
        event = session.get(AuditEvent, newest)
        written = set(session.scalars(select(AuditEntity.key).where(AuditEntity.event_id == newest,
                                                                    AuditEntity.written.is_(True))))
        key = next(k for k in order if k in written)
        return Change(event.id, event.editor, event.operation, (event.before or {}).get(key),
                      (event.after or {}).get(key), event.at)


def _newest_write(session: Session, keys: Iterable[str]) -> int | None:
    """The id of the newest audit event that wrote one of these keys (one query; the key/event index)."""
    return session.scalar(select(func.max(AuditEntity.event_id)).where(AuditEntity.key.in_(list(keys)),
                                                                       AuditEntity.written.is_(True)))


BOOKKEEPING = ("version", "updated_at", "updated_by", "name_key")  # columns every class write moves


def _edited(after: Mapping[str, Any]) -> str:
    """"country set to 'France'", "display name cleared": what an edit of other columns did."""
    parts = [f"{k.replace('_', ' ')} " + (f"set to {v!r}" if v not in (None, "") else "cleared")
             for k, v in after.items() if k not in BOOKKEEPING]
    return ", ".join(parts) or "changed"


def class_fate(store: sessionmaker[Session], class_id: int, shown: str | None = None) -> tuple[str, str | None, str]:
    """(name, status now or None when removed, what happened to it last and who did it), e.g.
    ("Delta Four", "retired", "retired by bob in operation 8") or ("Alpha One", "retired",
    "merged into 'Beta Two' by bob in operation 7").

    The name is the one the editor knows it by: `shown` (as the page drew it) when given, else the name
    before the last change when that renamed it, else its name now."""
    change = last_change(store, [f"class:{int(class_id)}"])
    before, after = (change.before or {}, change.after) if change else ({}, {})
    with store() as session:
        row = session.get(CelebrityClass, int(class_id))
        name, status = (row.name, row.status) if row is not None else (None, None)
        merged_into = after.get("merged_into_id") if after else None
        merged_into = session.get(CelebrityClass, int(merged_into)) if merged_into else None
    if after and "name" in after:
        name = before.get("name") or name
    name = shown or name or before.get("name") or f"class {class_id}"  # removed: its name is in the snapshot
    if change is None:
        return name, status, "changed outside the audited operations"
    if after is None:
        what = "removed"
    elif merged_into is not None:
        what = f"merged into {merged_into.name!r}"
    elif "status" in after:
        what = "retired" if after["status"] == "retired" else f"made {after['status']}"
    elif "name" in after:
        what = f"renamed to {after['name']!r}"
    else:
        what = _edited(after)
    return name, status, f"{what} {change.by()}" + (" (an undo)" if change.operation == "undo" else "")


def refuse_lost_class(store: sessionmaker[Session], choice: Choice) -> bool:
    """Call on a press, with select_choice's Choice: True (after an error that names what happened to the
    class the editor chose, and who did it) when it is no longer offered, so that nothing is written.
    The loss is then forgotten: the next press acts on the class the box shows."""
    lost = choice.lost
    if lost is None:
        return False
    forget_lost(choice)
    if not isinstance(lost, Integral):
        st.error(plain(f"{lost!s} is no longer offered; nothing was written: choose again"))
        return True
    name, status, how = class_fate(store, lost)
    state = "is no longer active" if status != "active" else "is no longer offered"
    st.error(plain(f"{name!r} {state} ({how}); nothing was written: choose the class again"))
    if (when := class_change_when(store, lost)) is not None:
        st.caption(plain(when))
    return True


def class_usable(store: sessionmaker[Session], choice: Choice, ask: str = RELABEL_TO_NOTHING) -> bool:
    """On a press: whether the class box's choice may be written, i.e. it is still offered
    (`refuse_lost_class`) and one was chosen at all (`box_chosen`, `ask` says what to choose). Every class
    box with no default asks both, in this order: a lost choice is named before "choose one"."""
    return not refuse_lost_class(store, choice) and box_chosen(choice, ask)


def class_change_when(store: sessionmaker[Session], class_id: int) -> str | None:
    """"Operation 8 (bob) was at 2026-12-07 07:53:49 UTC": when the change `class_fate` names was made, as
    conflict refusals say it (`utc_text`), None when no audited operation wrote the class. A line of its own
    under the refusal: the refusal's wording is what editors (and the tests) already know."""
    change = last_change(store, [f"class:{int(class_id)}"])
    return None if change is None else f"Operation {change.event_id} ({change.editor}) was at {utc_text(change.at)}."


def flash(message: str, kind: str = "success") -> None:
    """A message shown once, at the top of the next run (survives st.rerun); plain text, not markdown."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, plain(message)))


def show_flash() -> None:
    for kind, message in st.session_state.pop(FLASH_KEY, []):
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(message)


def result_message(result: Any) -> str:
    """'Done: <summary> (operation N)', or 'Undone: ...' for an undo, whichever page ran it."""
    if isinstance(result, tuple):
        result = next((r for r in result if hasattr(r, "summary")), None)
    if result is None or not hasattr(result, "summary"):
        return "Done."
    suffix = f" (operation {result.event_id})" if getattr(result, "event_id", None) else ""
    verb = "Undone" if getattr(result, "operation", None) == "undo" else "Done"
    return f"{verb}: {result.summary}{suffix}"


def history_table(events: pd.DataFrame) -> pd.DataFrame:
    """An audit history frame (`queries.history_frame` and kin) as a page shows it: times as UTC text, as
    `giflens history` and the Overview print them. Why: PostgreSQL hands times back in the session's zone
    and SQLite in UTC without one, so the same operation would read hours apart on two pages."""
    return events.assign(at=[utc_text(v) for v in events["at"]]) if "at" in events.columns else events


def write(action: Callable[[sessionmaker[Session], str], Any], after: Callable[[Any], None] | None = None,
          rerun: bool = True) -> Any:
    """Run a labeling operation as the signed-in editor: action(store, editor).

    Refused without an editor. A StoreError is shown with st.error and None returned. On success
    `after(result)` runs (e.g. to select what was created), the outcome is flashed, and the page
    reruns (unless rerun=False, then the result is returned)."""
    editor = require_editor()
    if editor is None:
        return None
    try:
        result = action(get_store(), editor)
    except StoreError as exc:
        show_error(exc)
        return None
    forget_tick_versions()  # the editor's own change: Review's ticks must not be refused as changed by them
    if after is not None:
        after(result)
    flash(result_message(result))
    for note in getattr(result, "notes", None) or []:
        flash(note, "warning")
    if rerun:
        st.rerun()
    return result


def versions_seen(key: str, current: Mapping[Any, Any]) -> dict[Any, int]:
    """The versions these rows had when the editor last saw them: an operation's expected_versions.

    Why not the versions read now: a click reruns the whole page, which reads the store again
    before the button's code runs, so what this run read may already be another editor's change,
    and acting on it would overwrite that change unseen. Each page records what it rendered under
    `key`; call this before the buttons: it returns the previous run's record (the current version
    for rows shown for the first time) and keeps the current one for the next click."""
    memory: dict[Any, int] = st.session_state.setdefault(VERSIONS_KEY, {}).setdefault(key, {})
    current = {k: int(v) for k, v in current.items()}
    seen = {k: memory.get(k, v) for k, v in current.items()}
    memory.clear()
    memory.update(current)
    return seen


def forget_tick_versions(_result: Any = None) -> None:
    """After any write of this editor's (a bulk action, an undo), forget every table's versions at the
    tick and the versions it drew: they may predate the editor's own change, and a press must be refused
    only for others'. The drawn ones too: a still-ticked row would otherwise be refilled from the run
    before the write (`versions_at_tick`), and a write reruns the page at once, so the tables drawn after
    the pressed one kept versions older still. `write` (every page's own writes, the Overview's undo included) and the sidebar's Undo last (app.py
    `_undo_last`) call it."""
    for key in [k for k in st.session_state if str(k).endswith(TICK_VERSIONS)]:
        st.session_state.pop(key, None)
    drawn: dict[Any, Any] = st.session_state.get(VERSIONS_KEY, {})
    for key in [k for k in drawn if str(k).endswith(DRAWN)]:
        drawn.pop(key, None)


def drawn_before(key: str) -> set[Any]:
    """The rows the page recorded under `key` when it was last drawn (call it before `versions_seen`,
    which records this run's): what the editor had on screen when they pressed a button."""
    return set(st.session_state.get(VERSIONS_KEY, {}).get(key, {}))


def progress_callback(bar: Any, unit: str = "") -> Callable[[int, int], None]:
    """on_progress(done, total) for a long operation, drawn on an st.progress bar: the shape every
    long-running function of giflens reports progress in."""
    suffix = f" {unit}" if unit else ""

    def on_progress(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0) if total else 1.0, text=f"{done} / {total}{suffix}")

    return on_progress


def stage_progress(bar: Any, unit: str = "", starting: str = "Starting"
                   ) -> tuple[Callable[[int, int], None], Callable[[str], None]]:
    """(on_progress, on_step) drawing "12 / 86 steps · training the head on the holdout split, epoch 9/40" on an
    st.progress bar: the count and, as the CLI's bar says it, the stage under way (the first seconds of a
    retrain or an experts vote move no count: the store is read, models loaded)."""
    state = {"done": 0, "total": 0, "doing": ""}

    def draw() -> None:
        count = f"{state['done']} / {state['total']}{' ' + unit if unit else ''}" if state["total"] else starting
        bar.progress(min(state["done"] / state["total"], 1.0) if state["total"] else 0.0,
                     text=f"{count} · {state['doing']}" if state["doing"] else count)

    def on_progress(done: int, total: int) -> None:
        state.update(done=done, total=total)
        draw()

    def on_step(doing: str) -> None:
        state["doing"] = doing
        draw()

    return on_progress, on_step


# -- small parsers for what editors type -------------------------------------------------------
def server_path(text: str) -> Path:
    """A path typed on a page, with `~` and `~user` expanded. A `~user` the server has no home folder for
    is a ValidationError (shown by show_error), not pathlib's RuntimeError as a traceback."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise ValidationError(f"cannot expand {Path(text).parts[0]!r}: the server knows no such user's home "
                              "folder") from None


def parse_ids(text: str | None, what: str = "face") -> list[int]:
    """'12, 15 20' -> [12, 15, 20]; anything else than whole numbers is a ValidationError."""
    parts = [p for p in re.split(r"[\s,;]+", text or "") if p]
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        raise ValidationError(f"{what} ids must be whole numbers separated by commas or spaces; got {', '.join(bad[:5])}")
    return list(dict.fromkeys(int(p) for p in parts))


# -- uploads -----------------------------------------------------------------------------------
def allowed_extensions() -> list[str]:
    from embeddings.media import MEDIA_EXTENSIONS

    return sorted(ext.lstrip(".") for ext in MEDIA_EXTENSIONS)


def human_bytes(n: int) -> str:
    """Binary units, as the limits are set (GIFLENS_MAX_FILE_BYTES defaults to 200 MiB, shown as
    such, not as "209.7 MB"); no trailing ".0"."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def check_upload(name: str, size: int, settings: Settings) -> str | None:
    """Why an uploaded file is refused before it is saved (None: accepted). The content itself
    is checked again by ingest, which sniffs the format from the bytes, not the name."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in allowed_extensions():
        return f"type .{suffix or '?'} is not accepted (accepted: {', '.join(allowed_extensions())})"
    if size <= 0:
        return "the file is empty"
    if size > settings.max_file_bytes:
        return f"{human_bytes(size)} is over the limit of {human_bytes(settings.max_file_bytes)} per file"
    return None


# A file name's limit on Linux (and most file systems) is 255 bytes. An upload used to be written first as
# ".<name>.part"; names cut to fit that are kept (an upload saved again gets the same name). Its temporary
# name now adds more (TEMP_NAME_BYTES): a name too long for it is written under ".upload.<random>.part".
NAME_BYTES = 255 - len(".") - len(".part")
KEPT_SUFFIX_BYTES = 16  # a longer "extension" is no media type's: it is cut as part of the name


def fit_name(name: str, limit: int = NAME_BYTES) -> str:
    """`name` itself when its UTF-8 form fits in `limit` bytes; else its stem cut on a character boundary,
    a short hash of the whole name and its extension (kept: ingest and the pages read the type from it).

    Why the hash: two long names that differ only past the cut would otherwise be stored under one name,
    and two uploads of the same bytes under different names are two files, as short names are."""
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix
    if len(suffix.encode()) > KEPT_SUFFIX_BYTES:
        suffix = ""
    stem = name[:len(name) - len(suffix)] if suffix else name
    mark = "~" + hashlib.sha256(name.encode()).hexdigest()[:8]
    room = limit - len(mark.encode()) - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + mark + suffix  # "ignore": the cut character only


def safe_file_name(name: str) -> str:
    """The base name of an upload with path syntax and control characters removed, cut to fit the file
    system's limit on a name (fit_name): a long name is otherwise refused by the system when saved.

    Leading dots go from the stem only (a hidden file is passed over by ingest), never from the extension
    (`Path.suffix`, the one `check_upload` accepted the upload by): "..jpg" is saved "upload.jpg", not "jpg",
    which has no extension to say it is media."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").split("/")[-1])
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    suffix = Path(base).suffix.strip()  # ".jpg" of "..jpg" and of " .jpg" (as check_upload reads it), "" of ".hidden"
    stem = base[:len(base) - len(Path(base).suffix)]
    while stem != (bare := stem.strip().lstrip(".")):  # ".. ..gif": dots and spaces until none lead
        stem = bare
    return fit_name((stem or "upload") + suffix)


def failure_row(path: str, reason: str) -> dict[str, str]:
    """A failed file as an editor reads it: its name, the reason alone, then the full path.

    Why: a reason arrives as "<path>: <what is wrong>", and an upload's path is a hidden folder under
    the data folder (uploads/<hash>/<name>), so a table showing both pushed the reason out of view."""
    prefix = f"{path}: "
    return {"file": Path(path).name, "reason": reason[len(prefix):] if reason.startswith(prefix) else reason,
            "path": path}


def save_upload(name: str, data: bytes, settings: Settings) -> Path:
    """Store an upload under <data folder>/uploads/<content hash>/<name>: the same bytes twice are one file.

    A save that fails (a full disk, a file size limit) leaves neither its temporary file nor the folder it made
    (when nothing else is in it): a partial file left there was never cleaned up."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = Path(settings.data_dir) / UPLOADS / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_file_name(name)
    if path.exists():  # the folder is named by the content's hash: a file there under this name holds these bytes
        return path
    try:
        _write_new_file(path, data)
    except BaseException:
        with contextlib.suppress(OSError):  # not empty: another upload of these bytes is in it
            folder.rmdir()
        raise
    return path


# The part a temporary name adds to an upload's (`_new_temp_file`): "." before, "." + 8 random hex digits +
# ".part" after.
TEMP_NAME_BYTES = len(".") + len(".") + 8 + len(".part")


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """A new file of its own beside `path`, ".<name>.<random>.part" (".upload.<random>.part" when that name
    would be too long), open for writing. Why not tempfile.mkstemp: its file is private (0600) whatever the
    umask, and an upload is read as any media file of the data folder (by a teammate's service too)."""
    import secrets

    prefix = f".{path.name}." if len(path.name.encode()) + TEMP_NAME_BYTES <= 255 else ".upload."
    while True:
        tmp = path.with_name(f"{prefix}{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # another save drew the same name: draw again
            continue


def _write_new_file(path: Path, data: bytes) -> None:
    """Write `data` under a temporary name of its own in path's folder, then link it to `path`; the temporary
    name is removed in every case.

    Why its own name: two sessions uploading the same name and bytes at once shared ".<name>.part", so one
    wrote into the file the other was writing, and was refused (ENOENT, the other had renamed it away) or
    ingested a half-written file. Why a link: `path` only ever appears whole, and one already there (another
    session's, the same bytes) is kept, not replaced under a reader."""
    fd, tmp = _new_temp_file(path)
    try:
        with open(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another session saved these bytes under this name meanwhile: theirs is kept
            pass
        except OSError:  # no hard links here (EPERM, ENOSYS on FUSE mounts, EINVAL on FAT ...): a rename of a
            os.replace(tmp, path)  # whole file, as safe; if that fails too, its error is the real one
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def media_file(path: str | None, settings: Settings) -> Path | None:
    """A media or crop path from the store as a readable file (relative ones are under the data folder)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        p = Path(settings.data_dir) / p
    return p if p.is_file() else None


def face_change(store: sessionmaker[Session], face_id: int) -> str:
    """"face 25 relabeled by bob in operation 12 at 2026-12-07 07:53:49 UTC": what last happened to a face's
    label, who did it, in which operation and when (read from the audit log, `last_change`)."""
    change = last_change(store, [f"face:{int(face_id)}"])
    if change is None:
        return f"face {face_id} changed outside the audited operations"
    status = (change.after or {}).get("status")
    what = "label removed" if change.after is None else "marked unknown" if status == "unknown" else status or "changed"
    return f"face {face_id} {what} {change.by()} at {utc_text(change.at)}"


def _newly_decided(drawn: object, agreed: object) -> list[int]:
    """The faces among `agreed` ((face, version) pairs) that were not decided at those versions in `drawn`."""
    try:
        before = set(drawn or ())
        return sorted(int(f) for f, v in agreed if (f, v) not in before)  # type: ignore[union-attr]
    except (TypeError, ValueError):  # a caller whose `agreed` is not (face, version) pairs
        return []


def decided_faces_tick(decided: int, warning: str, key: str, agreed: object = None, pressed: bool = False) -> bool:
    """Whether the buttons may change `decided` editors' decisions (faces whose label status is one of
    EDITOR_DECISIONS): True when there are none; else the warning shows and the editor ticks a box of its
    own. Explore's lasso or track, and Review's ticked rows, hold whatever lies in them, and approving overwrites another editor's
    rejection or "unknown" as surely as rejecting overwrites an approval.
    agreed: the decided faces and their versions the tick is for; when they change (a bulk action just
    decided more of the selection, or another editor changed one) the box comes back unticked, so a
    tick given for "2 decided faces" never stands for another set.
    pressed: a button the tick guards was pressed in this run. When the decided faces changed since the page
    was drawn, that press now meets a disabled button and writes nothing: say so, naming each face that
    changed, who changed it, in which operation and when (as Review's refusals do), not only the warning."""
    drawn = st.session_state.get(f"{key}__agreed")
    if not decided:
        st.session_state[f"{key}__agreed"] = agreed  # what a press on the buttons drawn now was made against
        return True
    if drawn != agreed:
        if pressed and (changed := _newly_decided(drawn, agreed)):
            named = "; ".join(face_change(get_store(), f) for f in changed[:10]) + (" ..." if len(changed) > 10 else "")
            st.warning(plain(f"Nothing was written: {named}. Look at the selection again and press again "
                             "(with the tick below, to change those decisions too)."))
        if st.session_state.get(key):  # a press in this run waits too (its button is drawn disabled): say why
            st.info("The decided faces changed since the box was ticked (an action, or another editor's decision), "
                    "so it is unticked and the buttons wait for a new tick: tick it again to change them as shown.")
        st.session_state[key] = False  # before the checkbox is drawn this run: a fresh, unticked box
        st.session_state[f"{key}__agreed"] = agreed
    st.warning(warning)
    return st.checkbox(f"Change the {decided} decided face(s) too", key=key)


def look_alikes(catalog: pd.DataFrame, name: str, but: int | None = None) -> pd.DataFrame:
    """The classes of `catalog` (a classes_frame; but `but`) whose name reads as `name` once accents, case and
    underscores are ignored (`search_key`): "Beyonce" for "Beyoncé", "Celine_Dion" for "Céline Dion". No class
    when one holds the name itself (`class_name_key`): the store refuses that one with its own message."""
    key = search_key(name)
    others = catalog[catalog["class_id"] != but]
    if not key or (others["name"].map(class_name_key) == class_name_key(name)).any():
        return others.iloc[0:0]
    return others[others["name"].map(search_key) == key]


def different_person(catalog: pd.DataFrame, form: str, name: str, ticked: bool, button: str,
                     but: int | None = None, current: str | None = None) -> bool:
    """Whether `name` may be written by the form: yes when no other class looks alike (`look_alikes`), or the
    editor ticked "It is a different person" after a warning naming these very classes; otherwise the
    classes are named in a warning and nothing is written. A rename that keeps the name's `search_key`
    (`current`: the class's name now) makes no new look-alike and is not asked. Every form that names a
    new class (Classes' Add, Rename, Split; Explore's class from a selection) asks it.

    Why: GIPHY's list imported names without accents, so "Beyoncé" typed as written was a second class of
    the same person, added without a word (the uniqueness key keeps accents, rightly: "Müller" and
    "Muller" may be two people, so the editor decides). As with the seed faces' tick, the tick counts for
    the classes the last warning named: a look-alike added meanwhile is named before anything is written."""
    if current is not None and search_key(name) == search_key(current):
        return True
    alike = look_alikes(catalog, name, but)
    named = (search_key(name), tuple(sorted(alike["class_id"].astype(int).tolist())))
    warned = st.session_state.setdefault(ALIKE_WARNED_KEY, {})
    if alike.empty or (ticked and warned.get(form) == named):
        return True
    warned[form] = named
    listed = "; ".join(f"{r['name']!r} (id {r['class_id']}, {r['status']})" for _, r in alike.head(10).iterrows())
    st.warning(plain(f"{name.strip()!r} reads as {len(alike)} existing class(es) once accents, case and underscores "
                     f"are ignored: {listed}{' ...' if len(alike) > 10 else ''}. If it is the same person, use that "
                     f"class. Nothing was written: tick \"It is a different person\" and press {button} again."))
    return False


def forget_look_alikes(form: str, tick_key: str) -> None:
    """After a write: the next name's look-alikes need their own warning and tick."""
    st.session_state.get(ALIKE_WARNED_KEY, {}).pop(form, None)
    st.session_state.pop(tick_key, None)
