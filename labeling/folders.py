"""What a folder on the server holds, for the Ingest page's folder browser: its subfolders and how
many media files sit directly in it. Pure file-system reads, no Streamlit."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embeddings.media import is_media_file


@dataclass
class FolderListing:
    path: Path
    subfolders: list[Path] = field(default_factory=list)
    media_files: int = 0  # directly in the folder; ingest also searches the subfolders
    error: str | None = None  # why the folder could not be read (the editor sees it, nothing breaks)


def list_folder(path: Path) -> FolderListing:
    """Subfolders (hidden ones left out, sorted by name, any case) and the count of media files.

    Why only direct files: counting a whole tree can take minutes on a large share, and the editor
    only needs to see that they are in the right place before ingest searches it recursively."""
    path = Path(path).expanduser().resolve()
    listing = FolderListing(path)
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        listing.error = f"cannot read {path}: {exc.strerror or exc}"
        return listing
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                listing.subfolders.append(entry)
            elif is_media_file(entry):
                listing.media_files += 1
        except OSError:  # a broken link or a file that vanished: not worth failing the listing
            continue
    listing.subfolders.sort(key=lambda p: p.name.casefold())
    return listing
