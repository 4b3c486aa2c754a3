#!/usr/bin/env bash
# Makes everything deploy/secure/nats-server.conf needs, into OUT_DIR (created, mode 700):
#
#   ca.pem, ca-key.pem                   a new certificate authority (keep ca-key.pem offline)
#   nats-server-cert.pem, -key.pem       nats-server's certificate, for the names in
#                                        $STRATA_TLS_SERVER_NAMES (default DNS:localhost,IP:127.0.0.1)
#   <id>-cert.pem, <id>-key.pem          a client certificate for each identity below
#   <id>.nk                              the identity's nkey seed (secret: give it to that process only)
#   <id>.pub                             its public key (U…), which nats-server knows it by
#   nats-server.env                      the variables nats-server.conf reads (paths, public keys, listen)
#
# for the identities strata-server, strata-coordinator, strata-admin, alice and bob (the users of
# nats-server.conf). Usage:
#
#   deploy/secure/make-keys.sh /etc/strata/secure
#   set -a; . /etc/strata/secure/nats-server.env; set +a
#   nats-server -c deploy/secure/nats-server.conf
#
# Needs the openssl CLI, and node with the `nats` npm package (a Strata dependency) for the nkeys;
# run it from a Strata checkout or installation, or set NODE_PATH to a node_modules holding `nats`.
# It refuses an OUT_DIR that already holds a CA, so a second run never replaces keys in use.
# Certificates are valid for $STRATA_TLS_DAYS days (default 365); keys are EC P-256.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
command -v openssl >/dev/null 2>&1 || { echo "$0: the openssl CLI is missing (Debian: apt-get install openssl)" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "$0: node is missing (Strata needs Node 20)" >&2; exit 1; }

names="${STRATA_TLS_SERVER_NAMES:-DNS:localhost,IP:127.0.0.1}"
days="${STRATA_TLS_DAYS:-365}"
identities=(strata-server strata-coordinator strata-admin alice bob)
here="$(cd "$(dirname "$0")" && pwd)"

umask 077
mkdir -p "$1"
out="$(cd "$1" && pwd)"
case "$out" in *"'"*) echo "$0: OUT_DIR must not contain a single quote" >&2; exit 1 ;; esac
if [ -e "$out/ca.pem" ]; then
  echo "$0: $out already holds a CA (ca.pem); use an empty directory" >&2
  exit 1
fi

# One key pair and certificate signed by the CA. $1 file prefix, $2 subject CN, $3 extensions.
sign() {
  local ext="$out/.$1.ext"
  printf '%s\n' "$3" >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/$1-key.pem" -out "$out/.$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$out/.$1.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$out/$1-cert.pem" 2>/dev/null
  rm -f "$ext" "$out/.$1.csr"
}

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days "$days" \
  -keyout "$out/ca-key.pem" -out "$out/ca.pem" -subj "/CN=Strata example CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

sign nats-server nats-server "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$names"

for id in "${identities[@]}"; do
  sign "$id" "$id" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done
rm -f "$out/ca.srl"

# nkeys: a user key pair per identity (nats.js's nkeys, the same as `nk -gen user -pubout`).
# Resolved from the Strata checkout this script sits in, else from NODE_PATH.
(cd "$here/../.." && OUT="$out" IDS="${identities[*]}" node -e '
  const fs = require("node:fs");
  const { nkeys } = require("nats");
  for (const id of process.env.IDS.split(" ")) {
    const kp = nkeys.createUser();
    fs.writeFileSync(`${process.env.OUT}/${id}.nk`, new TextDecoder().decode(kp.getSeed()) + "\n", { mode: 0o600 });
    fs.writeFileSync(`${process.env.OUT}/${id}.pub`, kp.getPublicKey() + "\n");
  }
')

pub() { tr -d '\n' <"$out/$1.pub"; }
cat >"$out/nats-server.env" <<EOF
# Read by deploy/secure/nats-server.conf (set -a; . this file; set +a). Made by make-keys.sh.
STRATA_NATSD_LISTEN=127.0.0.1:4222
STRATA_NATSD_CA='$out/ca.pem'
STRATA_NATSD_CERT='$out/nats-server-cert.pem'
STRATA_NATSD_KEY='$out/nats-server-key.pem'
STRATA_NATSD_NKEY_SERVER=$(pub strata-server)
STRATA_NATSD_NKEY_COORDINATOR=$(pub strata-coordinator)
STRATA_NATSD_NKEY_ADMIN=$(pub strata-admin)
STRATA_NATSD_NKEY_ALICE=$(pub alice)
STRATA_NATSD_NKEY_BOB=$(pub bob)
EOF
chmod 644 "$out/ca.pem" "$out"/*.pub "$out"/*-cert.pem "$out/nats-server.env"
echo "made a CA, certificates and nkeys in $out"
