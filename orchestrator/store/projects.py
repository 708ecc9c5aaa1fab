"""Projects, their members and roles, and the one access check every entry point uses.

A caller who is not a member must not learn that a project exists, so `require_role` raises
`NotFoundError` for non-members and `PermissionDeniedError` only for members whose role is too weak.
Server admins act as owners of every project.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from orchestrator.domain.enums import Role
from orchestrator.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from orchestrator.store.models import Project, ProjectMember, User


def serialize_project(project: Project, role: Role | None = None) -> dict[str, Any]:
    return {"id": str(project.id), "name": project.name, "root_path": project.root_path,
            "created_at": project.created_at.isoformat(), "role": role.value if role else None}


def serialize_member(member: ProjectMember, user: User) -> dict[str, Any]:
    return {"user_id": str(user.id), "username": user.username, "role": member.role,
            "added_at": member.created_at.isoformat()}


def resolve_root(root_path: str) -> str:
    """An existing directory, absolute and with symlinks resolved, so later path checks compare real paths."""
    path = Path(root_path).expanduser()
    if not path.is_absolute():
        raise ValidationError("root_path must be an absolute path on the server", details={"field": "root_path"})
    real = path.resolve()
    if not real.is_dir():
        raise ValidationError(f"root_path {root_path!r} is not an existing directory on the server",
                              details={"field": "root_path"})
    return str(real)


def create_project(session: Session, name: str, root_path: str, owner: User) -> Project:
    project = Project(name=name, root_path=resolve_root(root_path), created_by=owner.id,
                      created_at=datetime.now(timezone.utc))
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=owner.id, role=Role.OWNER.value,
                              created_at=datetime.now(timezone.utc)))
    session.flush()
    return project


def load_project(session: Session, project_id: uuid.UUID) -> Project:
    """A project something refers to (a run, a session); NotFoundError when it no longer exists."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"project {project_id} does not exist")
    return project


def role_of(session: Session, user: User, project_id: uuid.UUID) -> Role | None:
    if session.get(Project, project_id) is None:
        return None
    if user.is_admin:
        return Role.OWNER
    role = session.scalar(select(ProjectMember.role).where(ProjectMember.project_id == project_id,
                                                           ProjectMember.user_id == user.id))
    return Role(role) if role else None


def require_role(session: Session, user: User, project_id: uuid.UUID, needed: Role, *,
                 resource: str | None = None) -> tuple[Project, Role]:
    """`resource` names what the caller asked for (e.g. "session <id>"), so a 404 reveals nothing more."""
    role = role_of(session, user, project_id)
    if role is None:
        raise NotFoundError(f"{resource or f'project {project_id}'} does not exist")
    if not role.allows(needed):
        raise PermissionDeniedError(f"this needs the {needed.value} role in the project; you are {role.value}",
                                    details={"needed": needed.value, "role": role.value})
    project = session.get(Project, project_id)
    assert project is not None
    return project, role


def list_projects_for(session: Session, user: User) -> list[tuple[Project, Role]]:
    if user.is_admin:
        return [(project, Role.OWNER) for project in session.scalars(select(Project).order_by(Project.created_at))]
    rows = session.execute(select(Project, ProjectMember.role).join(ProjectMember)
                           .where(ProjectMember.user_id == user.id).order_by(Project.created_at))
    return [(project, Role(role)) for project, role in rows]


def list_members(session: Session, project_id: uuid.UUID) -> list[tuple[ProjectMember, User]]:
    rows = session.execute(select(ProjectMember, User).join(User, User.id == ProjectMember.user_id)
                           .where(ProjectMember.project_id == project_id).order_by(ProjectMember.created_at))
    return [(member, user) for member, user in rows]


def set_member(session: Session, project_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> ProjectMember:
    if session.get(User, user_id) is None:
        raise NotFoundError(f"user {user_id} does not exist")
    member = session.get(ProjectMember, (project_id, user_id), with_for_update=True, populate_existing=True)
    if member is None:
        member = ProjectMember(project_id=project_id, user_id=user_id, role=role.value,
                               created_at=datetime.now(timezone.utc))
        session.add(member)
    else:
        if member.role == Role.OWNER.value and role != Role.OWNER:
            _refuse_last_owner(session, project_id)
        member.role = role.value
    session.flush()
    return member


def remove_member(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    member = session.get(ProjectMember, (project_id, user_id), with_for_update=True, populate_existing=True)
    if member is None:
        raise NotFoundError(f"user {user_id} is not a member of this project")
    if member.role == Role.OWNER.value:
        _refuse_last_owner(session, project_id)
    session.execute(delete(ProjectMember).where(ProjectMember.project_id == project_id,
                                                ProjectMember.user_id == user_id))


def _refuse_last_owner(session: Session, project_id: uuid.UUID) -> None:
    owners = session.execute(select(func.count()).select_from(ProjectMember)
                             .where(ProjectMember.project_id == project_id, ProjectMember.role == Role.OWNER.value)
                             ).scalar_one()
    if owners <= 1:
        raise ConflictError("a project needs at least one owner; make someone else owner first")
