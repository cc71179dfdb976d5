"""Secrets in URIs: a tracking URI may carry user:password (http://alice:s3cret@mlflow:5000). It is used as it
is on this machine, but never printed, logged, or sent along with a Ray job (whose environment the dashboard
shows): the cluster brings its own credentials (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")


def redact_credentials(text: str) -> str:
    """`text` (a URI, or a message quoting one) with every URI's user:password replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


def strip_credentials(uri: str) -> str:
    """`uri` without its user:password: what may leave this machine."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else uri
