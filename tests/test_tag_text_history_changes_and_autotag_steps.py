"""Tag names as typed in messages, every change line of a GIF's history, autotag's steps, and rejected tags
worded by where they came from.

1. A tag name with a format character (the Persian 'mi-khaham' with its zero-width non-joiner, the rainbow
   flag with its zero-width joiner) is shown as typed, not as a literal \\u200c or \\u200d: in the summary
   kept in the audit log, a conflict's error, `giflens history` (also for a summary logged before, with the
   escapes), and the Tags page's messages. `names_in_summary` reads new and old summaries alike.
2. `giflens history media:N` lists 5 change lines per operation by default, then "... and N more (--changes
   all lists them)"; `--changes all` or `--changes N` lists them.
3. `autotag` says what it does before its count moves: reading the store, then fitting, voting, writing.
4. The Tags page lists a rejected uploader tag as a "rejected tag", not a "rejected suggestion".
"""
from __future__ import annotations

import re

import pytest
from conftest import open_app, plain_media
from typer.testing import CliRunner

from labeling.auto_tagging import SOURCE, autotag
from labeling.cli import app, one_line
from labeling.audit import run_operation
from labeling.db import open_store
from labeling.errors import TagExistsError
from labeling.pages.tags import rejected_heading
from labeling.tags import add_tags, apply_tags, names_in_summary, quoted, requoted, set_tag_status
from test_queries import GIF, new_fixture_store

PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # 'mi-khaham', "I want", with its non-joiner
FLAG = "\U0001f3f3\u200d\U0001f308"  # the rainbow flag as a tag name keeps it (its selector folded away)
runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 'giflens.db'}")


def cli(tmp_path, *args: str):
    return runner.invoke(app, [*args, "--data-dir", str(tmp_path / "data"),
                               "--database-url", f"sqlite:///{tmp_path / 'giflens.db'}"])


def no_escapes(text: str) -> None:
    assert "\\u200c" not in text and "\\u200d" not in text, text


# -- 1. names as typed ------------------------------------------------------------------------------------
def test_quoted_keeps_format_characters_and_escapes_what_must_be():
    assert quoted(PERSIAN) == f"'{PERSIAN}'" and quoted(FLAG) == f"'{FLAG}'"
    # what repr prints as typed, quoted prints the same; line breaks, controls and bidi controls stay escaped
    for name in ["wow", "it's", 'say "hi"', "both ' and \"", "back\\slash", "a\nb", "\x00", "\u2028", "\u202eevil"]:
        assert quoted(name) == repr(name)
    assert one_line(f"tag {PERSIAN}\n") == f"tag {PERSIAN}\\n"


def test_summaries_and_conflicts_name_tags_as_typed_and_old_summaries_still_read(store, tmp_path):
    media = plain_media(store, 1)
    added = add_tags(store, media, [PERSIAN, FLAG], "ann")
    assert added.summary.startswith(f"add tag(s) '{PERSIAN}', '{FLAG}'"), added.summary
    assert names_in_summary(added.summary) == [PERSIAN, FLAG]
    old = f"add tag(s) {repr(PERSIAN)}, {repr(FLAG)} to 1 media"  # as a giflens before this one logged it
    assert names_in_summary(old) == [PERSIAN, FLAG] and requoted(old) == f"add tag(s) '{PERSIAN}', '{FLAG}' to 1 media"
    assert requoted("rename class \"O'Brien\" to 'x'") == "rename class \"O'Brien\" to 'x'"
    with pytest.raises(TagExistsError) as refused:
        add_tags(store, media, [PERSIAN], "bob")
    assert f"is already tagged '{PERSIAN}'" in str(refused.value)
    no_escapes(str(refused.value))

    other = plain_media(store, 1, first=2)
    with run_operation(store, "ann", "add_tags") as op:  # an addition as an older giflens logged it
        apply_tags(op, [(other[0], PERSIAN, 1.0), (other[0], FLAG, 1.0)], "editor")
        op.summary = old
    set_tag_status(store, [(other[0], FLAG)], "rejected", "bob")
    result = cli(tmp_path, "history", f"media:{other[0]}")
    assert result.exit_code == 0, result.output
    no_escapes(result.output)
    assert f"add tag(s) '{PERSIAN}', '{FLAG}' to 1 media" in result.output
    assert f"tag '{FLAG}': active -> rejected" in result.output
    assert f"tag '{PERSIAN}' added: active 1" in result.output


# -- 2. every change line on request ----------------------------------------------------------------------
def test_history_of_a_gif_lists_every_change_line_with_changes_all(store, tmp_path):
    media = plain_media(store, 1)
    tags = [f"t{i}" for i in range(9)]
    add_tags(store, media, tags, "ann")

    def change_lines(*options: str) -> list[str]:
        result = cli(tmp_path, "history", f"media:{media[0]}", *options)
        assert result.exit_code == 0, result.output
        return re.findall(r"^ {8}(tag .*|\.\.\. .*)$", result.output, re.M)

    default = change_lines()
    assert default[:5] == [f"tag 't{i}' added: active 1" for i in range(5)]
    assert default[5:] == ["... and 4 more (--changes all lists them)"]
    assert change_lines("--changes", "all") == [f"tag '{t}' added: active 1" for t in tags]
    assert change_lines("--changes", "2")[2:] == ["... and 7 more (--changes all lists them)"]
    bad = cli(tmp_path, "history", f"media:{media[0]}", "--changes", "many")
    assert bad.exit_code == 1 and "--changes must be a number of lines (0 or more) or all, got 'many'" in bad.output


# -- 3. autotag's steps -----------------------------------------------------------------------------------
def test_autotag_says_what_it_does_before_its_count_moves(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "tagtext-autotag-steps")
    said: list[tuple] = []
    result = autotag(fx.store, "bob", text=None, on_progress=lambda done, total: said.append((done, total)),
                     on_step=lambda doing: said.append(doing))
    steps = [s for s in said if isinstance(s, str)]
    voted = result.media
    assert steps == ["reading the store", "fitting the experts", f"voting on {voted} media",
                     "writing the suggestions"], said
    # the total is known once the store is read, before the experts are fitted
    assert said[:3] == ["reading the store", (0, voted), "fitting the experts"], said
    assert (voted, voted) in said and all(t == voted for _, t in (s for s in said if isinstance(s, tuple)))


# -- 4. rejected tags worded by their source --------------------------------------------------------------
def test_rejected_rows_are_worded_by_where_they_came_from():
    assert rejected_heading([SOURCE, "model"]) == "2 rejected suggestion(s)"
    assert rejected_heading(["uploader"]) == "1 rejected tag(s)"
    assert rejected_heading(["editor", SOURCE, "import"], " of **x**") == "3 rejected tag(s) of **x** (1 of them suggestions)"


def test_tags_page_lists_a_rejected_uploader_tag_as_a_rejected_tag(tmp_path_factory, monkeypatch):
    fx = new_fixture_store(tmp_path_factory, "tagtext-page")
    gif = fx.media[GIF]
    add_tags(fx.store, [gif], [PERSIAN], "uploads", source="uploader")
    set_tag_status(fx.store, [(gif, PERSIAN)], "rejected", "ann")
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    at.switch_page("labeling/pages/tags.py").run()
    at.selectbox(key="tags_media").set_value(gif).run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [e.label for e in at.expander]
    assert "1 rejected tag(s)" in labels and not any("rejected suggestion" in label for label in labels), labels
    # a message naming the tag names it as typed
    at.text_input(key=f"tags_new_{gif}").set_value(FLAG)
    [add] = [b for b in at.button if b.label == "Add tag"]
    add.click().run()
    assert any(f"add tag(s) '{FLAG}'" in s.value for s in at.success), [s.value for s in at.success]
