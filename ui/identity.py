"""Who is looking at a page: the visitor's workspace, and whether they are the operator.

A visitor's workspace key is the ``sid`` in their URL: 128 random bits
(``secrets.token_urlsafe(16)``), a capability link like a shared-document link.
Bookmarking the address brings the workspace back; anyone given the address is that
visitor.  The key itself is never written anywhere another visitor can read: files,
jobs and the operator's tables carry the one-way ``access.owner_id`` of it.  An address
whose ``sid`` is not such a key (a typo, a hand-made short one, an old 12-digit id from
before this rule) gets a new workspace and a visible note saying so.

Where the operator configured Streamlit's OIDC login (``[auth]`` in secrets.toml), a
logged-in user's workspace follows their account instead, on any device.

The operator is whoever holds the server's secret (``operator_secret``): opening the
link printed at start-up marks this browser session as the operator's, and the secret
is taken out of the address at once.  It lasts as long as the session: a refresh needs
the link again, so the secret never sits in a bookmark or on a projected screen.
"""
from __future__ import annotations

import hmac
import os
import re
import secrets

import streamlit as st

from core import paths
from core.access import Viewer, owner_id

KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")   # token_urlsafe(16): 128 bits
SESSION = "session_id"                     # the workspace key (ui/state.py keeps it with the setup)
OPERATOR_FLAG = "_operator"
NOTE = "_identity_note"
OPERATOR_PARAM = "operator"


def new_key() -> str:
    return secrets.token_urlsafe(16)


def resolve(sid) -> tuple[str, str | None]:
    """(workspace key, note for the visitor or None) for the ``sid`` of an address."""
    if sid is None:
        return new_key(), None
    if isinstance(sid, str) and KEY.match(sid):
        return sid, None
    return new_key(), ("The address you opened did not name a valid workspace, so a new, empty one was started. "
                       "Bookmark this page's new address to come back to it.")


def login_key() -> tuple[str, bool] | None:
    """(workspace key, is operator) of a user logged in with the operator's OIDC setup, else None."""
    try:
        user = st.user
        if not user.is_logged_in:
            return None
        who = str(user.get("sub") or user.get("email") or "")
    except Exception:  # noqa: BLE001 - no [auth] configured, or a Streamlit without st.user
        return None
    if not who:
        return None
    operators = _setting("operators", [])
    return f"oidc:{who}", isinstance(operators, (list, tuple)) and user.get("email") in operators


def login_configured() -> bool:
    """Whether the operator set up Streamlit's OIDC login (``[auth]`` in secrets.toml)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file
        return False


def _setting(name: str, default=None):
    """``[transferlab]`` in .streamlit/secrets.toml; no secrets file is the usual case."""
    try:
        return st.secrets.get("transferlab", {}).get(name, default)
    except Exception:  # noqa: BLE001 - FileNotFoundError / StreamlitSecretNotFoundError without a file
        return default


def operator_secret() -> str:
    """The operator's secret: ``operator_secret`` in secrets.toml's ``[transferlab]``, else
    ``TRANSFERLAB_OPERATOR_SECRET``, else one generated on first start and kept (mode
    0600) in the data folder, so the teacher's link survives a restart."""
    given = _setting("operator_secret") or os.environ.get("TRANSFERLAB_OPERATOR_SECRET")
    if given:
        return str(given)
    f = paths.DEFAULT_DATA_DIR / "operator_secret"
    try:
        return f.read_text(encoding="ascii").strip()
    except OSError:
        pass
    f.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(24))
    return f.read_text(encoding="ascii").strip()


def operator_link(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/?{OPERATOR_PARAM}={operator_secret()}"


def take_operator_link() -> None:
    """An ``?operator=`` in the address: checked (in constant time), then removed from it."""
    given = st.query_params.get(OPERATOR_PARAM)
    if given is None:
        return
    del st.query_params[OPERATOR_PARAM]
    if hmac.compare_digest(str(given).encode(), operator_secret().encode()):
        st.session_state[OPERATOR_FLAG] = True
    else:
        st.session_state[NOTE] = "That operator link is not valid on this server."


def viewer() -> Viewer:
    ss = st.session_state
    return Viewer(owner_id(ss[SESSION]), operator=bool(ss.get(OPERATOR_FLAG)))


def owner() -> str:
    return owner_id(st.session_state[SESSION])
