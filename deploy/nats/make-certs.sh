#!/usr/bin/env bash
# A private CA and one certificate for every NATS node: clients reach the nodes over TLS, and
# the nodes' routes use mutual TLS, so only a server holding a certificate of this CA joins.
#
#   deploy/nats/make-certs.sh DIR [HOST...]    hosts default to nats-1 nats-2 nats-3
#
# Writes DIR/ca.pem (give it to the services: OLYMPUS_NATS_TLS_CA), DIR/server.pem and
# DIR/server-key.pem (the nodes': OLYMPUS_NATS_TLS_CERT, OLYMPUS_NATS_TLS_KEY). An existing CA
# is kept, so running it again renews the node certificate under the same CA.
set -euo pipefail

dir=${1:?usage: make-certs.sh DIR [HOST...]}
shift
hosts=("$@")
if [ ${#hosts[@]} -eq 0 ]; then
  hosts=(nats-1 nats-2 nats-3)
fi
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is needed" >&2; exit 1; }

san=""
for host in "${hosts[@]}"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+="IP:$host,"; else san+="DNS:$host,"; fi
done
san=${san%,}

mkdir -p "$dir"
umask 077
if [ ! -e "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Olympus NATS CA" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=olympus-nats" \
  -keyout "$dir/server-key.pem" -out "$dir/server.csr" 2>/dev/null
# clientAuth too: a node presents the same certificate when it opens a route to another.
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
  -CAcreateserial -days 825 -out "$dir/server.pem" \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san") \
  2>/dev/null
rm -f "$dir/server.csr" "$dir/ca.srl"
chmod 0644 "$dir/ca.pem" "$dir/server.pem"
echo "certificates for ${hosts[*]} in $dir (the CA's key: $dir/ca-key.pem; keep it offline)"
