"""Who may see and change what on a server shared by a class.

Every run, dataset, upload, job and export belongs to an *owner*.  A visitor's owner id
is derived from their workspace key (the ``sid`` capability in their URL) by a one-way
hash, so the id written into run folders, job records and file names never lets anyone
who reads them act as that visitor.  Runs made outside the dashboard (the CLI, the
benchmark) and runs from before ownership existed belong to the ``OPERATOR``: whoever
started the server.

The rules, in one place so no page can forget one:

* a visitor **sees** their own items, and runs the operator published to the class;
* a visitor **changes** (deletes, exports, stops, publishes) only their own items;
* the operator sees and changes everything.

Nothing here reads the disk: ``core/runs`` stores the owner and the published mark,
``core/jobs`` the job's owner, and both ask here.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from core.errors import TransferLabError

OPERATOR = "operator"
_OWNER = re.compile(r"^(operator|[0-9a-f]{32})$")


class AccessError(TransferLabError):
    """A visitor asked to change something that is not theirs."""


def owner_id(workspace_key: str) -> str:
    """The owner id of a workspace key: 128 bits of a salted SHA-256, hex.  One-way on
    purpose: files and the operator's tables carry the id, never the key itself."""
    return hashlib.sha256(b"transferlab-owner\0" + workspace_key.encode("utf-8")).hexdigest()[:32]


def is_owner_id(text) -> bool:
    """Whether ``text`` can name an owner (it also names folders: nothing else gets near the disk)."""
    return isinstance(text, str) and bool(_OWNER.match(text))


def owner_of(record: dict | None) -> str:
    """The owner written in a run's config or a dataset's manifest; none (the CLI, or a
    run from before ownership) is the operator's."""
    owner = (record or {}).get("owner")
    return owner if is_owner_id(owner) else OPERATOR


@dataclass(frozen=True)
class Viewer:
    """The visitor a page is drawn for."""
    owner: str
    operator: bool = False

    def can_see(self, owner: str, published: bool = False) -> bool:
        return self.operator or owner == self.owner or published

    def can_change(self, owner: str) -> bool:
        return self.operator or owner == self.owner

    def require_change(self, owner: str, what: str) -> None:
        """Refuse a change to ``what`` unless it is this visitor's (or they are the operator)."""
        if not self.can_change(owner):
            raise AccessError(f"{what} belongs to someone else: only its owner (or the operator) can change it")


OPERATOR_VIEWER = Viewer(OPERATOR, operator=True)


def alias(owner: str) -> str:
    """A short, stable label for an owner in the operator's tables (not a key to anything)."""
    return "operator" if owner == OPERATOR else f"visitor {owner[:6]}"
