"""How the API answers clients that sent no credentials."""

from __future__ import annotations

from typing import Any


class AuthenticateHeaderMixin:
    """Answer 401 (not 403) to anonymous requests whenever any configured scheme can say so.

    DRF asks only the *first* authentication class for a ``WWW-Authenticate`` header, and
    session authentication has none, so with the usual ``[Session, Token]`` order anonymous
    clients would get 403 — indistinguishable from a missing permission.
    """

    def get_authenticate_header(self, request: Any) -> str | None:
        for authenticator in request.authenticators:
            header = authenticator.authenticate_header(request)
            if header:
                return str(header)
        return None
