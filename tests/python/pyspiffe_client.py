#!/usr/bin/env python3
"""Independent SPIFFE Workload API client built on py-spiffe 0.3.2.

The spire-rs end-to-end tests run it (with the venv python that
scripts/test.sh prepares, exported as SPIRE_TEST_PYTHON) against the real
spire-agent, to prove that a client nobody in this project wrote works
unchanged.

Every subcommand prints one JSON object on stdout. On failure it prints
"error: code=<gRPC code> <message>" on stderr (code names as gRPC's Go API
spells them, e.g. PermissionDenied) and exits 1; usage errors exit 2.

The Workload API address comes from --socket, else SPIFFE_ENDPOINT_SOCKET.

Subcommands:
  x509 [--out DIR]                     X.509 context: SVIDs (parsed and
                                       checked by py-spiffe) and bundles
  bundles                              X.509 and JWT bundles
  jwt --audience A [--spiffe-id ID]    fetch a JWT-SVID
  validate --audience A --token T      ValidateJWTSVID through the agent
  validate-local --audience A --token T
                                       validate against the JWT bundles
                                       fetched from the agent (py-spiffe's
                                       own signature and claim checks)
  raw-x509 [--no-header]               FetchX509SVID through the raw gRPC
                                       stub, optionally without the
                                       workload.spiffe.io header
"""

import argparse
import json
import os
import sys

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe import JwtSvid, SpiffeId, WorkloadApiClient


def grpc_code_name(code):
    """Turns grpc.StatusCode.PERMISSION_DENIED into 'PermissionDenied'."""
    return "".join(part.capitalize() for part in code.name.split("_"))


def code_of(exc):
    """Finds a gRPC status code in an exception or its causes."""
    seen = set()
    cur = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, grpc.Call):
            try:
                return grpc_code_name(cur.code())
            except Exception:  # noqa: BLE001 - best effort
                pass
        cur = cur.__cause__ or cur.__context__
    return "Unknown"


def make_client(args):
    socket = args.socket or os.environ.get("SPIFFE_ENDPOINT_SOCKET")
    if not socket:
        raise UsageError("no Workload API address: pass --socket or set SPIFFE_ENDPOINT_SOCKET")
    if "://" not in socket and not socket.startswith("unix:"):
        socket = "unix://" + socket
    return WorkloadApiClient(socket_path=socket, default_timeout=args.timeout)


class UsageError(Exception):
    pass


def pem_chain(certs):
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def cmd_x509(args):
    with make_client(args) as client:
        ctx = client.fetch_x509_context()
    out = args.out
    if out:
        os.makedirs(out, mode=0o700, exist_ok=True)
    svids = []
    for i, svid in enumerate(ctx.x509_svids):
        entry = {
            "spiffe_id": str(svid.spiffe_id),
            "serial": format(svid.leaf.serial_number, "x"),
            "not_after": svid.leaf.not_valid_after_utc.isoformat(),
            "chain_len": len(svid.cert_chain),
        }
        if out:
            chain_path = os.path.join(out, "svid_%d.pem" % i)
            key_path = os.path.join(out, "svid_%d.key" % i)
            with open(chain_path, "wb") as f:
                f.write(pem_chain(svid.cert_chain))
            key = svid.private_key.private_bytes(
                Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            entry["chain_path"] = chain_path
            entry["key_path"] = key_path
        svids.append(entry)
    bundles = {}
    for bundle in ctx.x509_bundle_set.bundles:
        td = bundle.trust_domain.name
        b = {"authorities": len(bundle.x509_authorities)}
        if out:
            path = os.path.join(out, "bundle_%s.pem" % td)
            with open(path, "wb") as f:
                f.write(pem_chain(sorted(bundle.x509_authorities, key=lambda c: c.serial_number)))
            b["path"] = path
        bundles[td] = b
    return {
        "spiffe_ids": [s["spiffe_id"] for s in svids],
        "default_svid_spiffeid": str(ctx.default_svid.spiffe_id) if ctx.default_svid else "",
        "svids": svids,
        "bundle_trust_domains": sorted(bundles),
        "bundles": bundles,
    }


def cmd_bundles(args):
    with make_client(args) as client:
        x509 = client.fetch_x509_bundles()
        jwt = client.fetch_jwt_bundles()
    return {
        "x509": {b.trust_domain.name: len(b.x509_authorities) for b in x509.bundles},
        "jwt": {
            b.trust_domain.name: sorted(b.jwt_authorities.keys())
            for b in jwt.bundles
        },
    }


def cmd_jwt(args):
    subject = SpiffeId(args.spiffe_id) if args.spiffe_id else None
    with make_client(args) as client:
        svid = client.fetch_jwt_svid(audience={args.audience}, subject=subject)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "audience": sorted(svid.audience),
        "expiry": svid.expiry,
        "token": svid.token,
    }


def cmd_validate(args):
    with make_client(args) as client:
        svid = client.validate_jwt_svid(args.token, args.audience)
    return {"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience), "expiry": svid.expiry}


def cmd_validate_local(args):
    with make_client(args) as client:
        bundles = client.fetch_jwt_bundles()
    insecure = JwtSvid.parse_insecure(args.token, {args.audience})
    bundle = bundles.get_bundle_for_trust_domain(insecure.spiffe_id.trust_domain)
    if bundle is None:
        raise RuntimeError("no JWT bundle for trust domain %s" % insecure.spiffe_id.trust_domain)
    svid = JwtSvid.parse_and_validate(args.token, bundle, {args.audience})
    return {"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience), "expiry": svid.expiry}


def cmd_raw_x509(args):
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    socket = args.socket or os.environ.get("SPIFFE_ENDPOINT_SOCKET")
    if not socket:
        raise UsageError("no Workload API address: pass --socket or set SPIFFE_ENDPOINT_SOCKET")
    if socket.startswith("unix://"):
        target = "unix:" + socket[len("unix://"):]
    elif socket.startswith("unix:"):
        target = socket
    else:
        target = "unix:" + socket
    metadata = [] if args.no_header else [("workload.spiffe.io", "true")]
    with grpc.insecure_channel(target) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=metadata, timeout=args.timeout)
        resp = next(iter(stream))
        stream.cancel()
    return {
        "spiffe_ids": [s.spiffe_id for s in resp.svids],
        "hints": [s.hint for s in resp.svids],
        "federated_bundles": sorted(resp.federated_bundles.keys()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", help="Workload API address (default $SPIFFE_ENDPOINT_SOCKET)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call deadline in seconds")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("x509")
    p.add_argument("--out", help="directory for svid_N.pem, svid_N.key, bundle_<td>.pem")
    p.set_defaults(func=cmd_x509)
    p = sub.add_parser("bundles")
    p.set_defaults(func=cmd_bundles)
    p = sub.add_parser("jwt")
    p.add_argument("--audience", required=True)
    p.add_argument("--spiffe-id")
    p.set_defaults(func=cmd_jwt)
    for name, func in (("validate", cmd_validate), ("validate-local", cmd_validate_local)):
        p = sub.add_parser(name)
        p.add_argument("--audience", required=True)
        p.add_argument("--token", required=True)
        p.set_defaults(func=func)
    p = sub.add_parser("raw-x509")
    p.add_argument("--no-header", action="store_true", help="omit the workload.spiffe.io metadata")
    p.set_defaults(func=cmd_raw_x509)

    try:
        args = parser.parse_args()
    except SystemExit as e:
        sys.exit(2 if e.code else 0)
    try:
        result = args.func(args)
    except UsageError as e:
        print("error: usage: %s" % e, file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        print("error: code=%s %s: %s" % (code_of(e), type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
