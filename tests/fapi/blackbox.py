#!/usr/bin/env python3
"""A black-box FAPI 2.0 check of an authorization server and its protected API, as a partner
sees them over HTTP. Written from the RFCs, not from the server's code:

  RFC 8414 (metadata), RFC 9126 (PAR), RFC 7636 (PKCE S256), RFC 7523 (private_key_jwt),
  RFC 9207 (iss in the authorization response), RFC 9449 (DPoP, nonces included),
  RFC 7638 (JWK thumbprint), RFC 9068 (JWT access tokens), RFC 6749 (code, refresh).

Usage:
  blackbox.py keys OUT_DIR
      Writes OUT_DIR/partner.jwks.json (the public key to register, e.g. with
      `keyhole partner add ... --jwks-file OUT_DIR/partner.jwks.json`), OUT_DIR/client-key.json
      (its private half, for private_key_jwt) and OUT_DIR/dpop-key.json (a separate P-256 key
      that proves possession with DPoP; it is never registered).
  blackbox.py run BASE CLIENT_ID REDIRECT_URI EMAIL PASSWORD OUT_DIR [--scope S] [--expect-nonce]
      Completes PAR, sign-in and consent, a DPoP-bound code exchange, bound calls to
      BASE/partner/v1/claims, a refresh and a bound call with the new token, checking every
      answer. --expect-nonce fails unless the server demanded DPoP nonces (use_dpop_nonce).

Exit 0 with one summary line when every check passed; 1 with the first mismatch otherwise;
2 on wrong usage.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

TIMEOUT = 15
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
# Algorithms an access token may be signed with; never "none" nor an HMAC.
TOKEN_ALGORITHMS = ["EdDSA", "ES256", "ES384", "PS256", "RS256"]


class Failure(Exception):
    """A check that did not hold: the message says which and what was seen."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256(data):
    return hashlib.sha256(data).digest()


def thumbprint(jwk):
    """RFC 7638 §3: SHA-256 over the required members only, sorted, no whitespace."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url(sha256(canonical.encode("utf-8")))


def public_ec(key):
    full = key.as_dict(private=False)
    return {name: full[name] for name in ("kty", "crv", "x", "y")}


def describe(response):
    body = response.text
    if len(body) > 400:
        body = body[:400] + "…"
    return f"{response.request.method} {response.url} -> {response.status_code} {body!r}"


def json_of(response, what):
    try:
        value = response.json()
    except ValueError:
        raise Failure(f"{what}: not JSON: {describe(response)}") from None
    check(isinstance(value, dict), f"{what}: not a JSON object: {describe(response)}")
    return value


# ----- WWW-Authenticate (RFC 9110 §11.6.1) ---------------------------------------------------

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_CHALLENGE_PART = re.compile(rf'\s*(?:({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)|({_TOKEN})|(,))')


def challenges(header):
    """{scheme (lower case): {parameter (lower case): value}} of every challenge in the header."""
    found, current, pos = {}, None, 0
    while pos < len(header):
        match = _CHALLENGE_PART.match(header, pos)
        if not match or match.end() == pos:
            break
        pos = match.end()
        name, value, scheme, _comma = match.groups()
        if scheme:
            current = found.setdefault(scheme.lower(), {})
        elif name and current is not None:
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            current[name.lower()] = value
    return found


def dpop_challenge(response):
    return challenges(response.headers.get("WWW-Authenticate", "")).get("dpop")


# ----- keys ----------------------------------------------------------------------------------


def write_private(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out, indent=2)


def cmd_keys(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    client_key = ECKey.generate_key("P-256", private=True)
    public = public_ec(client_key)
    kid = thumbprint(public)
    registered = dict(public, kid=kid, use="sig", alg="ES256")
    with open(os.path.join(out_dir, "partner.jwks.json"), "w") as out:
        json.dump({"keys": [registered]}, out, indent=2)
    write_private(
        os.path.join(out_dir, "client-key.json"),
        dict(client_key.as_dict(private=True), kid=kid, use="sig", alg="ES256"),
    )
    dpop_key = ECKey.generate_key("P-256", private=True)
    write_private(os.path.join(out_dir, "dpop-key.json"), dpop_key.as_dict(private=True))
    print(os.path.join(out_dir, "partner.jwks.json"))


def load_key(path):
    with open(path) as source:
        return ECKey.import_key(json.load(source))


# ----- DPoP (RFC 9449) -----------------------------------------------------------------------


class Dpop:
    """One DPoP key and the nonces each server role gave us (RFC 9449 §8 and §9)."""

    def __init__(self, key):
        self.key = key
        self.public = public_ec(key)
        self.jkt = thumbprint(self.public)
        self.nonces = {}
        self.asked = set()

    def proof(self, method, url, access_token=None, nonce=None):
        parts = urlsplit(url)
        claims = {
            "jti": secrets.token_urlsafe(24),
            "htm": method,
            # §4.2: the target URI without query and fragment.
            "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = b64url(sha256(access_token.encode("ascii")))
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public}
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])

    def remember(self, role, response):
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            self.nonces[role] = nonce

    def asks_for_nonce(self, role, response):
        if role == "as":
            # §8: 400 with error use_dpop_nonce and a DPoP-Nonce header.
            if response.status_code != 400:
                return False
            try:
                return response.json().get("error") == "use_dpop_nonce"
            except ValueError:
                return False
        # §9: 401 with WWW-Authenticate: DPoP error="use_dpop_nonce".
        challenge = dpop_challenge(response) or {}
        return response.status_code == 401 and challenge.get("error") == "use_dpop_nonce"

    def send(self, http, role, method, url, *, token=None, form=None, scheme="DPoP"):
        """Sends the request with a fresh proof; once more with the server's nonce when it
        asks for one. `form` is a function, so each try gets a fresh client assertion.
        Returns the answer and the proof it carried."""
        for attempt in (1, 2):
            proof = self.proof(method, url, token, self.nonces.get(role))
            headers = {"DPoP": proof}
            if token is not None:
                headers["Authorization"] = f"{scheme} {token}"
            data = form() if form else None
            response = http.request(
                method, url, headers=headers, data=data, allow_redirects=False, timeout=TIMEOUT
            )
            self.remember(role, response)
            if attempt == 1 and self.asks_for_nonce(role, response):
                check(
                    response.headers.get("DPoP-Nonce"),
                    f"use_dpop_nonce without a DPoP-Nonce header: {describe(response)}",
                )
                self.asked.add(role)
                continue
            return response, proof
        raise AssertionError("unreachable")


# ----- the browser ---------------------------------------------------------------------------


class Forms(HTMLParser):
    """Every form of a page: action, method, inputs and submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = {name: (value or "") for name, value in attrs}
        if tag == "form":
            self.forms.append(
                {
                    "action": attrs.get("action", ""),
                    "method": attrs.get("method", "get").lower(),
                    "inputs": [],
                    "buttons": [],
                }
            )
        elif not self.forms:
            return
        elif tag == "input":
            self.forms[-1]["inputs"].append(attrs)
        elif tag == "button" and attrs.get("type", "submit") == "submit" and attrs.get("name"):
            self.forms[-1]["buttons"].append((attrs["name"], attrs.get("value", "")))


def walk_browser(start, redirect_uri, email, password):
    """Plays the customer from `start`: signs in, allows every requested field, and returns the
    URL the server finally sends the browser to under `redirect_uri` (never visited)."""
    browser = requests.Session()
    method, url, data = "GET", start, None
    signed_in = consented = False
    for _ in range(12):
        response = browser.request(method, url, data=data, allow_redirects=False, timeout=TIMEOUT)
        if 300 <= response.status_code < 400:
            target = urljoin(url, response.headers.get("Location", ""))
            parts = urlsplit(target)
            if urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) == redirect_uri:
                check(consented, f"sent to the redirect URI before any consent: {target}")
                return target
            method, url, data = "GET", target, None
            continue
        check(response.status_code == 200, f"the browser got {describe(response)}")
        parser = Forms()
        parser.feed(response.text)
        posts = [form for form in parser.forms if form["method"] == "post"]
        check(posts, f"a page without a form: {describe(response)}")
        form = posts[0]
        names = {field.get("name") for field in form["inputs"]}
        fields = [
            (field["name"], field.get("value", ""))
            for field in form["inputs"]
            if field.get("type") == "hidden" and field.get("name")
        ]
        if any(field.get("type") == "password" for field in form["inputs"]):
            check(not signed_in, "the sign-in form came back after signing in (wrong password?)")
            login = next(
                (
                    f["name"]
                    for f in form["inputs"]
                    if f.get("type") == "email" or f.get("name") in ("email", "username")
                ),
                None,
            )
            secret = next(f["name"] for f in form["inputs"] if f.get("type") == "password")
            check(login, "the sign-in form has no e-mail field")
            fields += [(login, email), (secret, password)]
            signed_in = True
        elif "consent_id" in names and "csrf_token" in names:
            check(not consented, "the consent page came back after allowing")
            offered = [
                (f["name"], f.get("value", ""))
                for f in form["inputs"]
                if f.get("type") == "checkbox" and f.get("name") == "field"
            ]
            check(offered, "the consent page offers no field")
            check(("decision", "allow") in form["buttons"], "the consent page has no Allow button")
            fields += offered + [("decision", "allow")]
            consented = True
        else:
            raise Failure(f"neither a sign-in nor a consent page: {describe(response)}")
        method, url, data = "POST", urljoin(response.url, form["action"]), fields
    raise Failure("the browser did not reach the redirect URI within 12 steps")


# ----- the run -------------------------------------------------------------------------------


class Partner:
    def __init__(self, base, client_id, redirect_uri, out_dir):
        self.base = base.rstrip("/")
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.client_key = load_key(os.path.join(out_dir, "client-key.json"))
        with open(os.path.join(out_dir, "client-key.json")) as source:
            self.kid = json.load(source)["kid"]
        self.http = requests.Session()
        self.meta = {}

    def assertion(self):
        """RFC 7523 §3 (FAPI 2.0: the audience is the issuer)."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.meta["issuer"],
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + 60,
        }
        header = {"alg": "ES256", "kid": self.kid}
        return jwt.encode(header, claims, self.client_key, algorithms=["ES256"])

    def authenticated(self, form):
        return lambda: dict(
            form,
            client_id=self.client_id,
            client_assertion_type=ASSERTION_TYPE,
            client_assertion=self.assertion(),
        )

    def metadata(self):
        url = f"{self.base}/.well-known/oauth-authorization-server"
        response = self.http.get(url, timeout=TIMEOUT)
        check(response.status_code == 200, f"metadata: {describe(response)}")
        meta = json_of(response, "metadata")
        # RFC 8414 §3.3: the issuer is the URL the metadata was fetched under.
        check(
            meta.get("issuer") == self.base,
            f"metadata issuer {meta.get('issuer')!r} != {self.base!r}",
        )
        for name in (
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "pushed_authorization_request_endpoint",
        ):
            check(
                isinstance(meta.get(name), str) and meta[name].startswith(self.base),
                f"metadata {name}: {meta.get(name)!r}",
            )
        for name, value in (
            ("dpop_signing_alg_values_supported", "ES256"),
            ("token_endpoint_auth_methods_supported", "private_key_jwt"),
            ("code_challenge_methods_supported", "S256"),
        ):
            check(value in meta.get(name, []), f"metadata {name} lacks {value}: {meta.get(name)!r}")
        algs = meta.get("token_endpoint_auth_signing_alg_values_supported")
        check(
            algs is None or "ES256" in algs,
            f"token_endpoint_auth_signing_alg_values_supported lacks ES256: {algs!r}",
        )
        # RFC 9207 §3: a server that sends iss says so.
        check(
            meta.get("authorization_response_iss_parameter_supported") is True,
            "authorization_response_iss_parameter_supported is not true",
        )
        self.meta = meta
        keys = self.http.get(meta["jwks_uri"], timeout=TIMEOUT)
        check(keys.status_code == 200, f"jwks: {describe(keys)}")
        self.server_keys = KeySet.import_key_set(json_of(keys, "jwks"))

    def push(self, scope, state, challenge, dpop_jkt):
        form = {
            "response_type": "code",
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            # RFC 9449 §10: bind the code to our DPoP key (a server without it ignores it).
            "dpop_jkt": dpop_jkt,
        }
        response = self.http.post(
            self.meta["pushed_authorization_request_endpoint"],
            data=self.authenticated(form)(),
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        check(response.status_code == 201, f"PAR: {describe(response)}")
        body = json_of(response, "PAR")
        request_uri = body.get("request_uri")
        check(
            isinstance(request_uri, str) and request_uri.startswith(REQUEST_URI_PREFIX),
            f"PAR request_uri: {body!r}",
        )
        check(
            isinstance(body.get("expires_in"), int) and body["expires_in"] > 0,
            f"PAR expires_in: {body!r}",
        )
        return request_uri

    def token(self, dpop, form, what):
        response, _ = dpop.send(
            self.http, "as", "POST", self.meta["token_endpoint"], form=self.authenticated(form)
        )
        check(response.status_code == 200, f"{what}: {describe(response)}")
        # RFC 6749 §5.1
        check(
            "no-store" in response.headers.get("Cache-Control", ""),
            f"{what}: no Cache-Control: no-store ({response.headers.get('Cache-Control')!r})",
        )
        body = json_of(response, what)
        check(
            str(body.get("token_type", "")).lower() == "dpop",
            f"{what}: token_type {body.get('token_type')!r}, not DPoP",
        )
        for name in ("access_token", "refresh_token"):
            check(isinstance(body.get(name), str) and body[name], f"{what}: no {name}: {body!r}")
        check(
            isinstance(body.get("expires_in"), int) and body["expires_in"] > 0,
            f"{what}: expires_in {body.get('expires_in')!r}",
        )
        self.check_access_token(body["access_token"], dpop, what)
        return body

    def check_access_token(self, token, dpop, what):
        """RFC 9068 and RFC 9449 §6.1: verified against the published keys, bound to our key."""
        try:
            header = json.loads(b64url_decode(token.split(".")[0]))
            decoded = jwt.decode(token, self.server_keys, algorithms=TOKEN_ALGORITHMS)
        except (JoseError, ValueError, IndexError) as error:
            raise Failure(
                f"{what}: the access token does not verify against jwks_uri: {error!r}"
            ) from None
        check(
            header.get("typ", "").lower() in ("at+jwt", "application/at+jwt"),
            f"{what}: access token typ {header.get('typ')!r}",
        )
        claims = decoded.claims
        check(
            claims.get("iss") == self.meta["issuer"],
            f"{what}: access token iss {claims.get('iss')!r}",
        )
        check(
            claims.get("client_id") == self.client_id,
            f"{what}: access token client_id {claims.get('client_id')!r}",
        )
        check(
            isinstance(claims.get("exp"), int) and claims["exp"] > time.time(),
            f"{what}: access token exp {claims.get('exp')!r}",
        )
        jkt = (claims.get("cnf") or {}).get("jkt")
        check(
            jkt == dpop.jkt,
            f"{what}: access token cnf.jkt {jkt!r} != our key's thumbprint {dpop.jkt!r}",
        )

    def call(self, dpop, token, path, what):
        response, proof = dpop.send(self.http, "rs", "GET", f"{self.base}{path}", token=token)
        check(response.status_code == 200, f"{what}: {describe(response)}")
        return json_of(response, what), proof


def run(base, client_id, redirect_uri, email, password, out_dir, scope, expect_nonce):
    partner = Partner(base, client_id, redirect_uri, out_dir)
    dpop = Dpop(load_key(os.path.join(out_dir, "dpop-key.json")))
    check(dpop.jkt != thumbprint(public_ec(partner.client_key)), "the DPoP key is the client's key")
    partner.metadata()
    issuer = partner.meta["issuer"]

    # PAR with PKCE S256 and state, authenticated by an assertion.
    verifier = b64url(secrets.token_bytes(32))
    state = b64url(secrets.token_bytes(16))
    request_uri = partner.push(scope, state, b64url(sha256(verifier.encode("ascii"))), dpop.jkt)

    # The browser: only client_id and request_uri travel through it (RFC 9126 §4).
    start = (
        partner.meta["authorization_endpoint"]
        + "?"
        + urlencode({"client_id": client_id, "request_uri": request_uri})
    )
    arrived = walk_browser(start, redirect_uri, email, password)
    answer = parse_qs(urlsplit(arrived).query)
    check("error" not in answer, f"the authorization answered an error: {arrived}")
    for name in ("code", "state", "iss"):
        check(
            len(answer.get(name, [])) == 1,
            f"the authorization response lacks one {name}: {arrived}",
        )
    check(answer["state"][0] == state, f"state {answer['state'][0]!r} != {state!r}")
    check(answer["iss"][0] == issuer, f"iss {answer['iss'][0]!r} != {issuer!r} (RFC 9207)")
    code = answer["code"][0]

    # The code for DPoP-bound tokens.
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    tokens = partner.token(dpop, exchange, "code exchange")
    access = tokens["access_token"]

    # Bound calls: Authorization: DPoP and a proof with ath.
    granted = {s.split(":", 1)[1] for s in scope.split() if s.startswith("claims:")}
    listing, proof = partner.call(dpop, access, "/partner/v1/claims", "partner call")
    items = listing.get("items")
    check(isinstance(items, list) and items, f"partner call: no items: {listing!r}")
    for item in items:
        check(
            isinstance(item, dict) and "id" in item and set(item) <= granted | {"id"},
            f"partner call: an item beyond the granted fields {sorted(granted)}: {item!r}",
        )
    record_id = items[0]["id"]
    record, _ = partner.call(
        dpop, access, f"/partner/v1/claims/{record_id}", "partner call for one record"
    )
    check(record.get("id") == record_id, f"partner call for one record: {record!r}")

    claims_url = f"{partner.base}/partner/v1/claims"
    # The same token as a bearer token (RFC 9449 §7.2): refused.
    bearer = partner.http.get(
        claims_url, headers={"Authorization": f"Bearer {access}"}, timeout=TIMEOUT
    )
    check(bearer.status_code == 401, f"the bound token presented as Bearer: {describe(bearer)}")
    # A proof by another key: refused.
    stranger = Dpop(ECKey.generate_key("P-256", private=True))
    stranger.nonces = dict(dpop.nonces)
    other, _ = stranger.send(partner.http, "rs", "GET", claims_url, token=access)
    check(other.status_code == 401, f"a proof by another key: {describe(other)}")
    # The first call's proof again (RFC 9449 §11.1): refused as a DPoP proof.
    replay = partner.http.get(
        claims_url, headers={"Authorization": f"DPoP {access}", "DPoP": proof}, timeout=TIMEOUT
    )
    check(replay.status_code == 401, f"a replayed proof: {describe(replay)}")
    challenge = dpop_challenge(replay)
    check(
        challenge is not None and challenge.get("error") == "invalid_dpop_proof",
        'a replayed proof: not DPoP error="invalid_dpop_proof" but WWW-Authenticate '
        f"{replay.headers.get('WWW-Authenticate')!r}",
    )

    # Refresh: without a proof refused, with one a new token bound to the same key.
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    bare = partner.http.post(
        partner.meta["token_endpoint"], data=partner.authenticated(refresh)(), timeout=TIMEOUT
    )
    check(
        bare.status_code in (400, 401) and "access_token" not in bare.text,
        f"a refresh of a bound token without a proof: {describe(bare)}",
    )
    refreshed = partner.token(dpop, refresh, "refresh")
    check(refreshed["access_token"] != access, "refresh: the same access token again")
    again, _ = partner.call(
        dpop,
        refreshed["access_token"],
        f"/partner/v1/claims/{record_id}",
        "partner call with the refreshed token",
    )
    check(again.get("id") == record_id, f"partner call with the refreshed token: {again!r}")

    # The code once more (RFC 6749 §4.1.2): refused. Last, as a server may end the grant.
    replayed, _ = dpop.send(
        partner.http,
        "as",
        "POST",
        partner.meta["token_endpoint"],
        form=partner.authenticated(exchange),
    )
    check(
        replayed.status_code == 400
        and json_of(replayed, "code replay").get("error") == "invalid_grant",
        f"the code used twice: {describe(replayed)}",
    )

    if expect_nonce:
        check(dpop.asked, "--expect-nonce: the server never answered use_dpop_nonce")
    nonces = (
        "nonces demanded by " + "+".join(sorted(r.upper() for r in dpop.asked))
        if dpop.asked
        else "no nonce demanded"
    )
    print(
        f"blackbox: ok: {issuer} {client_id}: metadata, PAR, sign-in, consent, iss+state, "
        f"DPoP code exchange (cnf.jkt {dpop.jkt}), 2 bound calls, Bearer/other-key/replayed proof "
        "refused, refresh without proof refused, bound refresh, bound call, code replay refused; "
        f"{nonces}"
    )


def main(argv):
    if len(argv) == 2 and argv[0] == "keys":
        cmd_keys(argv[1])
        return 0
    if len(argv) >= 7 and argv[0] == "run":
        args, options = argv[1:7], argv[7:]
        scope, expect_nonce = "claims:status", False
        while options:
            option = options.pop(0)
            if option == "--scope" and options:
                scope = options.pop(0)
            elif option == "--expect-nonce":
                expect_nonce = True
            else:
                print(__doc__, file=sys.stderr)
                return 2
        try:
            run(*args, scope=scope, expect_nonce=expect_nonce)
        except Failure as failure:
            print(f"blackbox: FAILED: {failure}", file=sys.stderr)
            return 1
        except requests.RequestException as error:
            print(f"blackbox: FAILED: HTTP: {error}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
