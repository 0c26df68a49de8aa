"""`giflens dupes`: near-duplicate media pairs for an editor to review."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Hashable

import typer

from labeling.cli import (DatabaseUrl, DataDir, _step_progress, _store_for, app, interruption_said, make_settings,
                          refuse, status_task)


def dupes_names(paths: dict[Hashable, str]) -> dict[Hashable, str]:
    """media -> the name `giflens dupes` shows: the file name, or, where several media share one (a
    re-upload in another folder, the common case of a near-duplicate), the path from the folder their
    paths share, so each pair names files an editor can tell apart."""
    import os
    from collections import defaultdict

    by_name: dict[str, list[Hashable]] = defaultdict(list)
    for m, path in paths.items():
        by_name[Path(path).name].append(m)
    names = {m: Path(path).name for m, path in paths.items()}
    for name, ids in by_name.items():
        if len(ids) < 2 or len({paths[m] for m in ids}) < 2:
            continue
        try:
            root = os.path.commonpath([str(Path(paths[m]).parent) for m in ids])
        except ValueError:  # different drives: the whole paths
            root = ""
        for m in ids:
            names[m] = os.path.relpath(paths[m], root) if root else paths[m]
    return names


def replaced_on_disk(rows: list[tuple[Hashable, str, str | None]]) -> set[Hashable]:
    """Media (id, path, sha256) whose path a newer content holds now: a file overwritten and ingested again
    keeps the old row (its labels, its history) at the same path. Why: `dupes` would present the old
    content as that file, and an editor deleting "the copy" would delete a clip found nowhere else. Only
    paths several rows share are hashed again."""
    from collections import Counter

    from embeddings.cache import sha256_file

    shared = {p for p, n in Counter(p for _, p, _ in rows).items() if n > 1}
    now: dict[str, str | None] = {}
    for p in shared:
        try:
            now[p] = sha256_file(Path(p))
        except OSError:
            now[p] = None
    return {m for m, p, sha in rows if p in shared and now[p] is not None and sha != now[p]}  # gone: unknown


def other_names(session, media: dict[int, str], sha256: dict[int, str | None] | None = None) -> list[tuple[int, str]]:
    """(media id, path) of the other files the ok media `media` (id -> path) were ingested from: identical
    copies, byte for byte (`MediaPath`), oldest first. A copy whose file is gone while the media's own file
    is there is left out: that name was a move or a deleted copy, not a second file (on a store shared by
    machines, where neither file is here, the copy is listed). So is a name another ok item has as its own
    path, unless that file holds this item's bytes (`recorded_name_stands`, `sha256`: id -> content): a
    renamed item's old name a new clip took is no copy of it."""
    import os

    from sqlalchemy import select

    from labeling.importers import recorded_name_stands
    from labeling.schema import MediaPath

    own = set(media.values())
    sha256 = sha256 or {}
    rows = session.execute(select(MediaPath.media_id, MediaPath.path).where(MediaPath.media_id.in_(list(media)))
                           .order_by(MediaPath.media_id, MediaPath.id)) if media else []
    return [(m, p) for m, p in rows
            if p != media[m] and (os.path.exists(p) or not os.path.exists(media[m]))
            and recorded_name_stands(p, sha256.get(m), own)]


def _rows_of_pairs(identical: list[tuple[int, str]], pairs: list[tuple[int, int, int, int]],
                   hashes: dict[int, list[str]]) -> list[tuple[int, int, int, Hashable, Hashable, str]]:
    """What `giflens dupes` prints, closest first: (distance, frames, media_a, key_a, key_b, mark) where the
    keys name a media item (its id) or one of its copies ((id, path)). Identical copies first: distance 0,
    one media item under two names, marked "identical bytes"; then the near-duplicate media pairs."""
    out = [(0, len(hashes.get(m, [])), m, m, (m, p), "identical bytes") for m, p in identical]
    return out + [(distance, frames, a, a, b, "") for a, b, frames, distance in pairs]


def media_groups(identical: list[tuple[int, str]], pairs: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """The media that `giflens dupes` pairs, as groups: connected components of the near-duplicate pairs,
    plus each item met under several names (its identical copies), largest group first.

    Why: every pair is a row, so one clip re-uploaded five times is ten rows; an editor deciding which copy
    to keep wants the five together."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = sorted({m for a, b, _, _ in pairs for m in (a, b)} | {m for m, _ in identical})
    if not ids:
        return []
    index = {m: i for i, m in enumerate(ids)}
    rows = [index[a] for a, _, _, _ in pairs]
    cols = [index[b] for _, b, _, _ in pairs]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for m, label in zip(ids, labels):
        groups.setdefault(int(label), []).append(m)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


@app.command("dupes")
def dupes_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    radius: Annotated[int, typer.Option("--radius", help="Hamming distance (bits of 64, at most 16) of near-duplicate frames.")] = 6,
    groups: Annotated[bool, typer.Option("--groups", help="One line per group of copies of one clip, not one per pair.")] = False,
) -> None:
    """Near-duplicate media pairs from frame pHashes (re-uploads, re-encodes), closest first; identical
    copies (one media item ingested under several names) first, at distance 0, marked "identical bytes"."""
    from sqlalchemy import select

    from embeddings.near_duplicates import (
        NearDuplicateError,
        check_useful_radius,
        near_duplicate_media,
    )
    from labeling.export import MIN_HASH_BITS
    from labeling.schema import Media

    try:  # refused before the store is read: a huge radius pairs everything, at gigabytes of memory
        check_useful_radius(radius)
    except NearDuplicateError as exc:
        refuse(str(exc))
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    # one status from the store's reading to the comparison: a spinner on a terminal, status lines in a log,
    # then the comparison's passes counted on a bar. Ctrl-C: `interrupted: ...`, exit 130 (dupes only reads)
    with interruption_said(lambda: "no pairs listed (dupes only reads the store: nothing changed)"), \
            status_task("dupes", "reading the store") as (progress, task):
        with store() as session:  # closed before the files are hashed and the frames compared
            rows = session.execute(select(Media.id, Media.path, Media.frame_hashes, Media.sha256)
                                   .where(Media.status == "ok").order_by(Media.id)).all()
            sha = {m: digest for m, _, _, digest in rows}
            identical = other_names(session, {m: p for m, p, _, _ in rows}, sha)
        names = dupes_names({**{m: p for m, p, _, _ in rows}, **{(m, p): p for m, p in identical}})
        progress.update(task, current="hashing the files several media rows share a path with")
        replaced = replaced_on_disk([(m, p, digest) for m, p, _, digest in rows]
                                    + [((m, p), p, sha[m]) for m, p in identical])
        for key in replaced:
            names[key] += " (replaced on disk)"
        # Flat frames (black, one colour) are ignored, as the export's split does: they would pair every fade-out.
        hashes = {m: [h for h in (hs or []) if int(h, 16).bit_count() >= MIN_HASH_BITS] for m, _, hs, _ in rows}
        progress.update(task, current=f"comparing {sum(map(len, hashes.values()))} frame hashes")
        try:
            pairs = near_duplicate_media(hashes, radius=radius, on_progress=_step_progress(progress, task))
        except NearDuplicateError as exc:
            refuse(str(exc))
    shown = _rows_of_pairs(identical, pairs, hashes)
    found = media_groups(identical, pairs) if groups else []
    copies: dict[int, list[tuple[int, str]]] = {}
    for m, p in identical:
        copies.setdefault(m, []).append((m, p))
    group_of = {m: number for number, members in enumerate(found, 1) for m in members}
    distances: dict[int, list[int]] = {}
    for distance, _, m, _, _, _ in shown:  # each row's media_a: a pair's members share its group
        if m in group_of:
            distances.setdefault(group_of[m], []).append(distance)
    for number, members in enumerate(found, 1):
        keys = [k for m in members for k in [m, *copies.get(m, [])]]
        typer.echo(f"group {number}: {len(members)} media, {len(keys)} names, distance {min(distances[number])}-"
                   f"{max(distances[number])}: " + ", ".join(names[k] for k in keys))
    if shown and not groups:
        width = max(len(names[k]) for _, _, _, a, b, _ in shown for k in (a, b))
        typer.echo(f"{'distance':>8}  {'frames':>6}  {'media_a':>7}  {'media_b':>7}  {'name_a':<{width}}  name_b")
        for distance, frames, m, a, b, mark in shown:
            b_id = b[0] if isinstance(b, tuple) else b
            typer.echo(f"{distance:>8}  {frames:>6}  {m:>7}  {b_id:>7}  {names[a]:<{width}}  {names[b]}"
                       + (f" ({mark})" if mark else ""))
    in_pairs = {m for a, b, _, _ in pairs for m in (a, b)}
    # identical_pairs only when there are any: scripts (and tests) read the line as it always was
    typer.echo(f"pairs={len(pairs)} media_in_pairs={len(in_pairs)} media={len(rows)} "
               f"frames={sum(map(len, hashes.values()))} radius={radius}"
               + (f" identical_pairs={len(identical)}" if identical else "") + (f" groups={len(found)}" if groups else ""))
