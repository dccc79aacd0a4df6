#!/usr/bin/env bash
# Make the TLS certificates of a cleo_dask / Dask cluster with openssl:
#   ca.pem, ca-key.pem                  a private certificate authority (keep ca-key.pem secret)
#   scheduler.pem, scheduler-key.pem    the scheduler's certificate and key
#   worker.pem, worker-key.pem          the workers'
#   client.pem, client-key.pem          clients' (cleo-dask run / serve, notebooks)
# Every certificate is signed by the CA and valid for both server and client authentication
# (Dask uses mutual TLS).  Usage: deploy/make-certs.sh [OUTDIR]   (default: deploy/certs)
# Extra subject names: CERT_SANS="DNS:sched.example.org,IP:10.0.0.5" deploy/make-certs.sh
set -euo pipefail

out="${1:-$(dirname "$0")/certs}"
days="${CERT_DAYS:-825}"
sans="DNS:scheduler,DNS:localhost,DNS:cleo-scheduler,DNS:*.svc.cluster.local,IP:127.0.0.1${CERT_SANS:+,$CERT_SANS}"

command -v openssl >/dev/null || { echo "make-certs.sh: openssl is required" >&2; exit 2; }
mkdir -p "$out"
cd "$out"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.pem ] || [ ! -f ca-key.pem ]; then
  newkey ca-key.pem
  openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=cleo-dask CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
fi

cat > leaf.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$sans
EXT

for role in scheduler worker client; do
  newkey "$role-key.pem"
  openssl req -new -key "$role-key.pem" -subj "/CN=cleo-dask $role" -out "$role.csr"
  openssl x509 -req -in "$role.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" -sha256 \
    -extfile leaf.ext -out "$role.pem" 2>/dev/null
  rm -f "$role.csr"
done
rm -f leaf.ext ca.srl
# certificates are public; keys readable by the owner only (containers: mount read-only, see README)
chmod 644 ca.pem scheduler.pem worker.pem client.pem
echo "certificates in $out: ca.pem scheduler.pem worker.pem client.pem (+ *-key.pem)"
