"""The fake store's OAuth endpoints, as Shopify's: the merchant's authorize redirect, and the token endpoint
with its three grants (token exchange of a session token, refresh, authorization code).

Offline tokens are issued the expiring kind when asked (`expiring=1`): an access token for an hour and a
refresh token that works once (using it rotates both), so a second, racing refresh fails with
`invalid_grant` as Shopify's would.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

import jwt
from werkzeug.wrappers import Request, Response

from plugin.shopify.verify import oauth_hmac

ACCESS_TTL = 3600
REFRESH_TTL = 90 * 24 * 3600
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


class FakeOAuth:
    """Mixed into FakeStore, which provides `lock`, `shop_domain` and `_json`."""

    def _init_oauth(self, api_key: str | None, api_secret: str | None, scopes: str) -> None:
        self.api_key, self.api_secret, self.scopes = api_key, api_secret, scopes
        self.issued: dict[str, float] = {}  # access token -> expiry (wall clock)
        self.refresh_tokens: dict[str, bool] = {}  # refresh token -> still usable
        self.codes: dict[str, str] = {}  # authorization code -> shop
        self.grants: list[str] = []  # grant types served, in order (tests count refreshes)

    def token_valid(self, token: str) -> bool:
        expiry = self.issued.get(token)
        return expiry is not None and expiry > time.time()

    def authorize(self, request: Request) -> Response:
        """`/admin/oauth/authorize`: the merchant approves at once; redirect back with a signed code."""
        args = request.args
        if args.get("client_id") != self.api_key:
            return Response("unknown client_id", status=400)
        shop = self.shop_domain
        code = secrets.token_hex(8)
        self.codes[code] = shop
        params = {
            "code": code,
            "shop": shop,
            "state": args.get("state", ""),
            "timestamp": str(int(time.time())),
        }
        params["hmac"] = oauth_hmac(params, self.api_secret)
        return Response(status=302, headers={"Location": f"{args['redirect_uri']}?{urlencode(params)}"})

    def access_token_endpoint(self, request: Request) -> Response:
        """`/admin/oauth/access_token`."""
        body = request.get_json(silent=True) or request.form.to_dict()
        if body.get("client_id") != self.api_key or body.get("client_secret") != self.api_secret:
            return self._json({"error": "invalid_client"}, 401)
        grant = body.get("grant_type") or ("authorization_code" if "code" in body else "")
        with self.lock:
            self.grants.append(grant)
            if grant == TOKEN_EXCHANGE:
                try:
                    jwt.decode(
                        body.get("subject_token", ""),
                        self.api_secret,
                        algorithms=["HS256"],
                        audience=self.api_key,
                    )
                except jwt.PyJWTError as error:
                    return self._json(
                        {"error": "invalid_subject_token", "error_description": str(error)}, 400
                    )
                return self._json(self._issue(expiring=str(body.get("expiring", "0")) == "1"))
            if grant == "refresh_token":
                token = body.get("refresh_token", "")
                if not self.refresh_tokens.get(token):
                    return self._json(
                        {"error": "invalid_grant", "error_description": "refresh token used"}, 400
                    )
                self.refresh_tokens[token] = False
                return self._json(self._issue(expiring=True))
            if grant == "authorization_code":
                if self.codes.pop(body.get("code", ""), None) is None:
                    return self._json({"error": "invalid_grant"}, 400)
                return self._json(self._issue(expiring=str(body.get("expiring", "0")) == "1"))
        return self._json({"error": "unsupported_grant_type"}, 400)

    def _issue(self, expiring: bool) -> dict:
        token = "shpat_" + secrets.token_hex(16)
        self.issued[token] = time.time() + (ACCESS_TTL if expiring else 10**10)
        answer = {"access_token": token, "scope": self.scopes}
        if expiring:
            refresh = "shprt_" + secrets.token_hex(16)
            self.refresh_tokens[refresh] = True
            answer.update(expires_in=ACCESS_TTL, refresh_token=refresh, refresh_token_expires_in=REFRESH_TTL)
        return answer
