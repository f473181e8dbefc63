#!/usr/bin/env python3
"""An independent cosign signer for iguana's tests, written from the cosign
and sigstore specs on Python `cryptography` (not iguana's verifier).

  cosign_sign.py keygen DIR              DIR/cosign.key (PKCS#8) + DIR/cosign.pub (SPKI)
  cosign_sign.py legacy KEY DIGEST REF   {"payload": b64, "signature": b64}
      the simple-signing payload cosign writes for `cosign sign` (legacy
      `sha256-<hex>.sig` tag), ECDSA-P256-SHA256 over the payload bytes
  cosign_sign.py bundle KEY DIGEST REF [PREDICATE_TYPE]
      a sigstore bundle v0.3 (JSON) with a DSSE envelope of an in-toto
      Statement about DIGEST, signed over the DSSE PAE, as `cosign sign`
      (v3, new bundle format) attaches it; PREDICATE_TYPE defaults to
      cosign's signature predicate
  cosign_sign.py blob KEY FILE           a v0.3 messageSignature bundle (sign-blob)
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO = "application/vnd.in-toto+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def load(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def sign(key, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def keygen(out):
    key = ec.generate_private_key(ec.SECP256R1())
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cosign.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(out, "cosign.pub"), "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def legacy(key, digest, ref):
    payload = json.dumps({
        "critical": {
            "identity": {"docker-reference": ref},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }, separators=(",", ":")).encode()
    return {"payload": b64(payload), "signature": b64(sign(key, payload))}


def bundle(key, digest, ref, predicate_type=SIGN_PREDICATE):
    algorithm, hexdigest = digest.split(":", 1)
    statement = json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0],
                     "digest": {algorithm: hexdigest}}],
        "predicateType": predicate_type,
        "predicate": {},
    }, separators=(",", ":")).encode()
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": b64(sign(key, pae(IN_TOTO, statement)))}],
        },
    }


def blob(key, path):
    with open(path, "rb") as f:
        data = f.read()
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(data).digest())},
            "signature": b64(sign(key, data)),
        },
    }


def main(argv):
    cmd = argv[1]
    if cmd == "keygen":
        keygen(argv[2])
        return
    key = load(argv[2])
    if cmd == "legacy":
        out = legacy(key, argv[3], argv[4])
    elif cmd == "bundle":
        out = bundle(key, argv[3], argv[4], *argv[5:6])
    elif cmd == "blob":
        out = blob(key, argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
    sys.stdout.write(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv)
