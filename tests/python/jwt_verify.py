#!/usr/bin/env python3
"""Verifies a JWT-SVID with PyJWT, a JWT library independent of spire-rs.

Usage: jwt_verify.py --jwks FILE --audience A --token T [--subject ID]
       (--token - reads the token from stdin)

FILE is a JWKS document: a SPIFFE bundle (`spire-server bundle show -format
spiffe`, whose "keys" hold both x509-svid and jwt-svid keys) or a plain JWKS.
Only keys with "use": "jwt-svid" (or no "use") are considered. The token's
"kid" header must name one of them. Checks: signature, algorithm among the
asymmetric JWS algorithms allowed for JWT-SVIDs, "aud" contains the audience,
"exp" present and in the future, "sub" present (and equal to --subject when
given).

Prints {"valid": true, "sub": ..., "aud": [...], "exp": ..., "kid": ..., "alg": ...}
and exits 0, or prints "error: <reason>" on stderr and exits 1.
"""

import argparse
import json
import sys

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

ALLOWED_ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


def load_key(jwk):
    kty = jwk.get("kty")
    if kty == "EC":
        return ECAlgorithm.from_jwk(jwk)
    if kty == "RSA":
        return RSAAlgorithm.from_jwk(jwk)
    raise ValueError("unsupported key type %r" % kty)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--subject")
    args = parser.parse_args()
    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()
    try:
        with open(args.jwks) as f:
            doc = json.load(f)
        keys = {}
        for jwk in doc.get("keys", []):
            if jwk.get("use", "jwt-svid") != "jwt-svid":
                continue
            kid = jwk.get("kid")
            if not kid:
                continue
            keys[kid] = jwk
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if not kid:
            raise ValueError("token header has no kid")
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise ValueError("algorithm %r is not allowed for JWT-SVIDs" % alg)
        typ = header.get("typ")
        if typ not in (None, "JWT", "JOSE"):
            raise ValueError("token typ %r is not JWT or JOSE" % typ)
        if kid not in keys:
            raise ValueError("no jwt-svid key with kid %r in %s (have %s)" % (kid, args.jwks, sorted(keys)))
        key = load_key(keys[kid])
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=args.audience,
            options={"require": ["exp", "sub", "aud"], "verify_exp": True, "verify_aud": True},
        )
        if args.subject is not None and claims["sub"] != args.subject:
            raise ValueError("sub %r is not the expected %r" % (claims["sub"], args.subject))
        if not str(claims["sub"]).startswith("spiffe://"):
            raise ValueError("sub %r is not a SPIFFE ID" % claims["sub"])
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    aud = claims["aud"]
    print(json.dumps({
        "valid": True,
        "sub": claims["sub"],
        "aud": aud if isinstance(aud, list) else [aud],
        "exp": claims["exp"],
        "kid": kid,
        "alg": alg,
    }))


if __name__ == "__main__":
    main()
