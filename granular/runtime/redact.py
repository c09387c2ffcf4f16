"""Credentials kept out of what the project writes: a URI's password never reaches params.yaml,
a log line, a printed message or an MLflow record. Credentials come from the environment
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow reads itself)."""
from __future__ import annotations

import re

MASK = "***"
# scheme://AUTHORITY rest: the authority ends at the first / ? or #, and holds user:password@
# before its last @. Parsed by hand so that no URI, however malformed, makes redaction fail.
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL)


def _userinfo(uri: str) -> tuple[str, str, str, str] | None:
    """(scheme://, user, host:port, rest) of a URI whose user part holds a password, else None."""
    match = _URI.fullmatch(uri)
    if not match:
        return None
    userinfo, at, hostport = match["authority"].rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return match["scheme"], userinfo.split(":", 1)[0], hostport, match["rest"]


def has_password(uri: str) -> bool:
    """Whether the URI carries a password in its user part (`scheme://user:password@host`)."""
    return _userinfo(uri) is not None


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ***: `http://user:***@host:5000/path`. A URI
    without one (sqlite:///..., http://host, http://user@host) comes back unchanged."""
    parts = _userinfo(uri)
    if parts is None:
        return uri
    scheme, user, hostport, rest = parts
    return f"{scheme}{user}:{MASK}@{hostport}{rest}"
