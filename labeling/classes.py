"""Celebrity classes: add (optionally seeded with faces), rename, merge, split, retire, attributes."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import Operation, OperationResult, run_operation
from labeling.errors import NotFoundError, ValidationError
from labeling.face_labels import apply_decision
from labeling.schema import CLASS_STATUSES, CelebrityClass, FaceLabel
from labeling.validation import clean_attributes, clean_class_name, class_name_key


def find_class(session: Session, name: str) -> CelebrityClass | None:
    return session.scalars(select(CelebrityClass).where(CelebrityClass.name_key == class_name_key(clean_class_name(name)))).first()


def _check_free(session: Session, name: str, but: int | None = None) -> None:
    existing = session.scalars(select(CelebrityClass).where(CelebrityClass.name_key == class_name_key(name))).first()
    if existing is not None and existing.id != but:
        raise ValidationError(f"a class named {existing.name!r} already exists (id {existing.id}, {existing.status})")


def _load_class(op: Operation, class_id: int, expected_version: int | None = None) -> dict[str, Any]:
    row = op.load("class", [(class_id,)])[(class_id,)]
    if row is None:
        raise NotFoundError(f"no celebrity class with id {class_id}")
    op.check_versions("class", {(class_id,): row}, {class_id: expected_version} if expected_version else None,
                      editor_col="updated_by")
    op.concern(f"class:{class_id}")
    return row


def create_class(op: Operation, name: str, display_name: str | None = None, status: str = "active",
                 external_id: str | None = None, attributes: dict[str, Any] | None = None) -> int:
    name = clean_class_name(name)
    if status not in CLASS_STATUSES:
        raise ValidationError(f"class status must be one of {', '.join(CLASS_STATUSES)}, got {status!r}")
    _check_free(op.session, name)
    display = clean_class_name(display_name) if display_name else None
    if external_id is not None and len(external_id) > 64:
        raise ValidationError("external id is longer than 64 characters")
    values = {"name": name, "name_key": class_name_key(name), "display_name": display, "status": status,
              "external_id": external_id, "created_at": op.now, "updated_by": op.editor,
              **clean_attributes(attributes or {})}
    class_id = op.insert_one("class", values)
    op.concern(f"class:{class_id}")
    return class_id


def add_class(factory: sessionmaker[Session], name: str, editor: str, display_name: str | None = None,
              status: str = "active", external_id: str | None = None, attributes: dict[str, Any] | None = None,
              seed_face_ids: Sequence[int] = (),
              expected_versions: dict[int, int] | None = None) -> tuple[int, OperationResult]:
    """A new celebrity; seed faces (e.g. a selection in the explorer) are relabeled to it.
    expected_versions (face id -> face label version the editor saw, 0 for a face without a
    label, as in `decide_faces`) refuses the whole operation, class included, with a
    ConflictError when a seed face changed since: the selection may hold confirmed faces."""
    with run_operation(factory, editor, "add_class") as op:
        class_id = create_class(op, name, display_name, status, external_id, attributes)
        if seed_face_ids:
            apply_decision(op, seed_face_ids, "relabel", class_id, expected_versions)
        op.summary = f"add class {clean_class_name(name)!r}" + (f" seeded with {len(set(seed_face_ids))} face(s)" if seed_face_ids else "")
    return class_id, op.result


def rename_class(factory, class_id: int, new_name: str, editor: str, expected_version: int | None = None,
                 display_name: str | None = None) -> OperationResult:
    with run_operation(factory, editor, "rename_class") as op:
        row = _load_class(op, class_id, expected_version)
        name = clean_class_name(new_name)
        _check_free(op.session, name, but=class_id)
        values = {"name": name, "name_key": class_name_key(name)}
        if display_name is not None:
            values["display_name"] = clean_class_name(display_name) if display_name.strip() else None
        op.update("class", {(class_id,): values}, {(class_id,): row})
        op.summary = f"rename class {row['name']!r} to {name!r}"
    return op.result


def _labels_of(session: Session, class_id: int, face_ids: Sequence[int] | None = None) -> list[int]:
    stmt = select(FaceLabel.face_id).where(
        (FaceLabel.class_id == class_id) | (FaceLabel.predicted_class_id == class_id))
    if face_ids is not None:
        stmt = stmt.where(FaceLabel.face_id.in_(list(face_ids)))
    return list(session.scalars(stmt.order_by(FaceLabel.face_id)))


def _move_labels(op: Operation, face_ids: list[int], source_id: int, target_id: int) -> int:
    """Point both decisions and predictions of source at target, keeping each label's status."""
    rows = op.load("face", [(f,) for f in face_ids])
    changes = {}
    for key, row in rows.items():
        values = {}
        if row["class_id"] == source_id:
            values["class_id"] = target_id
        if row["predicted_class_id"] == source_id:
            values["predicted_class_id"] = target_id
        if values:
            changes[key] = {**values, "editor": op.editor}
    if changes:
        op.update("face", changes, rows)
    return len(changes)


def merge_classes(factory, source_id: int, target_id: int, editor: str,
                  expected_versions: dict[int, int] | None = None) -> OperationResult:
    """Every label of source moves to target; source is retired and remembers where it went.
    expected_versions (class id -> version the editor saw) refuses a merge based on a stale view."""
    if source_id == target_id:
        raise ValidationError("cannot merge a class into itself")
    seen = expected_versions or {}
    with run_operation(factory, editor, "merge_classes") as op:
        source = _load_class(op, source_id, seen.get(source_id))
        target = _load_class(op, target_id, seen.get(target_id))
        if target["status"] == "retired":
            raise ValidationError(f"class {target['name']!r} is retired: merge into an active class")
        moved = _move_labels(op, _labels_of(op.session, source_id), source_id, target_id)
        op.update("class", {(source_id,): {"status": "retired", "merged_into_id": target_id}}, {(source_id,): source})
        op.summary = f"merge class {source['name']!r} into {target['name']!r} ({moved} label(s) moved)"
    return op.result


def split_class(factory, class_id: int, face_ids: Sequence[int], editor: str, new_name: str | None = None,
                target_id: int | None = None, expected_version: int | None = None) -> tuple[int, OperationResult]:
    """Move a subset of a class's faces to a new class (new_name) or an existing one (target_id);
    expected_version (of the split class) refuses a split based on a stale view."""
    if (new_name is None) == (target_id is None):
        raise ValidationError("split needs exactly one of a new class name or an existing target class")
    if not face_ids:
        raise ValidationError("split needs the faces to move")
    with run_operation(factory, editor, "split_class") as op:
        source = _load_class(op, class_id, expected_version)
        members = set(_labels_of(op.session, class_id, face_ids))
        outside = [f for f in face_ids if f not in members]
        if outside:
            raise ValidationError(f"face(s) {outside[:10]} are not labeled {source['name']!r}")
        if target_id is None:
            target_id = create_class(op, new_name)
        else:
            if target_id == class_id:
                raise ValidationError("split target is the class itself")
            if _load_class(op, target_id)["status"] == "retired":
                raise ValidationError("split target class is retired")
        moved = _move_labels(op, list(members), class_id, target_id)
        op.summary = f"split {moved} face(s) from class {source['name']!r} into class {target_id}"
    return target_id, op.result


def retire_class(factory, class_id: int, editor: str, expected_version: int | None = None) -> OperationResult:
    """Retired classes keep their labels (history) but take no new ones and are not exported."""
    return set_class_status(factory, class_id, "retired", editor, expected_version)


def set_class_status(factory, class_id: int, status: str, editor: str, expected_version: int | None = None) -> OperationResult:
    if status not in CLASS_STATUSES:
        raise ValidationError(f"class status must be one of {', '.join(CLASS_STATUSES)}, got {status!r}")
    with run_operation(factory, editor, "set_class_status") as op:
        row = _load_class(op, class_id, expected_version)
        if row["status"] != status:
            op.update("class", {(class_id,): {"status": status}}, {(class_id,): row})
        op.summary = f"class {row['name']!r}: {row['status']} -> {status}"
    return op.result


def set_class_attributes(factory, class_id: int, editor: str, expected_version: int | None = None,
                         **attributes: Any) -> OperationResult:
    """Set demographic attributes (gender, ethnicity, birth_year, country); None clears one."""
    values = clean_attributes(attributes)
    if not values:
        raise ValidationError("no attributes given")
    with run_operation(factory, editor, "set_class_attributes") as op:
        row = _load_class(op, class_id, expected_version)
        changed = {k: v for k, v in values.items() if row[k] != v}
        if changed:
            op.update("class", {(class_id,): changed}, {(class_id,): row})
        op.summary = f"class {row['name']!r}: " + ", ".join(f"{k}={v!r}" for k, v in values.items())
    return op.result


def clear_class_attributes(factory, class_id: int, editor: str, names: Sequence[str], expected_version: int | None = None) -> OperationResult:
    return set_class_attributes(factory, class_id, editor, expected_version, **{n: None for n in names})


def class_counts(session: Session) -> dict[int, dict[str, int]]:
    """class id -> {status: number of faces} for the catalog."""
    out: dict[int, dict[str, int]] = {}
    rows = session.execute(select(FaceLabel.class_id, FaceLabel.status, func.count()).where(FaceLabel.class_id.is_not(None))
                           .group_by(FaceLabel.class_id, FaceLabel.status))
    for class_id, status, n in rows:
        out.setdefault(class_id, {})[status] = n
    return out
