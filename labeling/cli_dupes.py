"""`giflens dupes`: near-duplicate media pairs for an editor to review."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeling.cli import (
    DatabaseUrl,
    DataDir,
    _store_for,
    app,
    console,
    make_settings,
    refuse,
)


def dupes_names(paths: dict[int, str]) -> dict[int, str]:
    """media -> the name `giflens dupes` shows: the file name, or, where several media share one (a
    re-upload in another folder, the common case of a near-duplicate), the path from the folder their
    paths share, so each pair names files an editor can tell apart."""
    import os
    from collections import defaultdict

    by_name: dict[str, list[int]] = defaultdict(list)
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


def replaced_on_disk(rows: list[tuple[int, str, str | None]]) -> set[int]:
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


@app.command("dupes")
def dupes_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    radius: Annotated[int, typer.Option("--radius", help="Hamming distance (bits of 64, at most 16) of near-duplicate frames.")] = 6,
) -> None:
    """Near-duplicate media pairs from frame pHashes (re-uploads, re-encodes), closest first."""
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
    with _store_for(settings, create=False)() as session:
        rows = session.execute(select(Media.id, Media.path, Media.frame_hashes, Media.sha256)
                               .where(Media.status == "ok").order_by(Media.id)).all()
    names = dupes_names({m: p for m, p, _, _ in rows})
    for m in replaced_on_disk([(m, p, sha) for m, p, _, sha in rows]):
        names[m] += " (replaced on disk)"
    # Flat frames (black, one colour) are ignored, as the export's split does: they would pair every fade-out.
    hashes = {m: [h for h in (hs or []) if int(h, 16).bit_count() >= MIN_HASH_BITS] for m, _, hs, _ in rows}
    try:
        with console.status(f"comparing {sum(map(len, hashes.values()))} frame hashes"):
            pairs = near_duplicate_media(hashes, radius=radius)
    except NearDuplicateError as exc:
        refuse(str(exc))
    if pairs:
        width = max(len(names[m]) for a, b, _, _ in pairs for m in (a, b))
        typer.echo(f"{'distance':>8}  {'frames':>6}  {'media_a':>7}  {'media_b':>7}  {'name_a':<{width}}  name_b")
        for a, b, frames, distance in pairs:
            typer.echo(f"{distance:>8}  {frames:>6}  {a:>7}  {b:>7}  {names[a]:<{width}}  {names[b]}")
    in_pairs = {m for a, b, _, _ in pairs for m in (a, b)}
    typer.echo(f"pairs={len(pairs)} media_in_pairs={len(in_pairs)} media={len(rows)} "
               f"frames={sum(map(len, hashes.values()))} radius={radius}")
