#!/usr/bin/env python3
"""Validates a JWT-SVID the way an OIDC relying party does, with PyJWT only.

Usage: oidc_verify.py --discovery URL --audience A --token T [--host H]

Fetches the OIDC discovery document at URL (sending "Host: H" when given),
checks its required members, then lets PyJWT's PyJWKClient fetch the JWKS
from the document's "jwks_uri" and pick the key named by the token's "kid".
Checks: signature, algorithm among those the document advertises, "aud"
contains the audience, "exp" in the future, "sub" present.

Prints {"valid": true, "sub": ..., "kid": ..., "alg": ..., "issuer": ...,
"jwks_kids": [...]} and exits 0, or prints "error: <reason>" on stderr and
exits 1.
"""

import argparse
import json
import sys
import urllib.request

import jwt

REQUIRED = [
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "response_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--discovery", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--host")
    args = parser.parse_args()
    try:
        request = urllib.request.Request(args.discovery)
        if args.host:
            request.add_header("Host", args.host)
        with urllib.request.urlopen(request, timeout=30) as response:
            doc = json.load(response)
        missing = [k for k in REQUIRED if k not in doc]
        if missing:
            raise ValueError("discovery document lacks %s" % ", ".join(missing))
        algs = doc["id_token_signing_alg_values_supported"]
        client = jwt.PyJWKClient(doc["jwks_uri"], cache_jwk_set=False, timeout=30)
        signing_key = client.get_signing_key_from_jwt(args.token)
        header = jwt.get_unverified_header(args.token)
        claims = jwt.decode(
            args.token,
            signing_key.key,
            algorithms=algs,
            audience=args.audience,
            options={"require": ["exp", "sub", "aud"]},
        )
        kids = [k.key_id for k in client.get_signing_keys()]
    except Exception as e:  # noqa: BLE001 - any failure is a verification failure
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    print(json.dumps({
        "valid": True,
        "sub": claims["sub"],
        "kid": header.get("kid"),
        "alg": header.get("alg"),
        "issuer": doc["issuer"],
        "jwks_uri": doc["jwks_uri"],
        "jwks_kids": kids,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
