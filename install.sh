#!/usr/bin/env bash
# Install Olympus in production: secrets, images, the whole stack behind HTTPS.
#
#   ./install.sh              first install, or make sure it runs (a second run changes nothing)
#   ./install.sh --upgrade    rebuild the images from this checkout and restart; volumes are kept
#   ./install.sh --configure  only write the settings and secrets into .env (edit it, then run
#                             ./install.sh)
#
# Settings, from the environment or .env (the first run writes them there):
#   OLYMPUS_DOMAIN      the name Olympus is served at (default localhost: Caddy's local CA);
#                       a public name gets a Let's Encrypt certificate (ports 80 and 443 open)
#   OLYMPUS_ACME_EMAIL  Let's Encrypt's contact; needed with a public name
#   OLYMPUS_ENGINE      docker or podman (default: whichever is found, docker first)
# Every secret is generated once with openssl into .env (mode 0600) and never overwritten.
set -euo pipefail
cd "$(dirname "$0")"

upgrade=0
configure_only=0
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=1 ;;
  --configure) configure_only=1 ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "install.sh: unknown argument '$1' (--upgrade, --configure or nothing)" >&2; exit 2 ;;
esac

die() { echo "install.sh: $*" >&2; exit 1; }

for tool in openssl curl; do
  command -v "$tool" >/dev/null || die "$tool is needed (your distribution's $tool package)"
done

# --- the container engine: docker with compose v2, or podman with podman-compose -------------
find_engine() {
  engine=${OLYMPUS_ENGINE:-}
  if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker compose version >/dev/null 2>&1 \
      && docker info >/dev/null 2>&1; then
      engine=docker
    elif command -v podman >/dev/null; then
      engine=podman
    fi
  fi
  case "$engine" in
    docker)
      command -v docker >/dev/null || die "docker is not installed (https://docs.docker.com/engine/install/)"
      docker compose version >/dev/null 2>&1 \
        || die "docker compose v2 is needed (the docker-compose-plugin package)"
      compose=(docker compose)
      ;;
    podman)
      command -v podman >/dev/null || die "podman is not installed"
      if command -v podman-compose >/dev/null; then
        compose=(podman-compose)
      else
        die "podman-compose is needed with podman (pip install podman-compose, or your distribution's package)"
      fi
      ;;
    "") die "no container engine: install Docker with compose v2, or podman with podman-compose" ;;
    *) die "OLYMPUS_ENGINE must be docker or podman, not '$engine'" ;;
  esac
}
compose=()
[ "$configure_only" = 1 ] || find_engine

# --- settings and secrets, once --------------------------------------------------------------
umask 077
touch .env
chmod 0600 .env

# The value .env holds for $1, or nothing.
stored() { sed -n "s/^$1=//p" .env | tail -n 1; }

# The setting $1 as compose will see it: the environment first, then .env, else $2.
setting() {
  local value
  value=$(printenv "$1" || true)
  [ -n "$value" ] || value=$(stored "$1")
  echo "${value:-$2}"
}

# Write $1=$2 into .env unless it holds $1 already: an existing value is never replaced.
keep() {
  if ! grep -q "^$1=" .env; then
    printf '%s=%s\n' "$1" "$2" >> .env
    echo "  $1 written to .env"
  fi
}

secret() { openssl rand -hex 24; }

# localhost or an IP address: Caddy's local CA, no Let's Encrypt
is_local() { [[ $1 =~ ^(localhost|[0-9.]+|[0-9a-fA-F:]+)$ ]]; }

echo "Settings and secrets (.env):"
domain=$(stored OLYMPUS_DOMAIN)
if [ -n "$domain" ] && [ -n "${OLYMPUS_DOMAIN:-}" ] && [ "$OLYMPUS_DOMAIN" != "$domain" ]; then
  die "OLYMPUS_DOMAIN is $domain in .env: change it there (then ./install.sh --upgrade)"
fi
domain=${domain:-${OLYMPUS_DOMAIN:-localhost}}
if ! is_local "$domain"; then
  email=$(stored OLYMPUS_ACME_EMAIL)
  email=${email:-${OLYMPUS_ACME_EMAIL:-}}
  [ -n "$email" ] || die "OLYMPUS_DOMAIN=$domain is a public name: set OLYMPUS_ACME_EMAIL (Let's Encrypt's contact) too"
  keep OLYMPUS_ACME_EMAIL "$email"
fi
keep OLYMPUS_DOMAIN "$domain"
for service in GATEWAY EMBEDDER INDEXER GENERATOR ADMIN; do
  keep "OLYMPUS_NATS_${service}_PASSWORD" "$(secret)"
done
keep OLYMPUS_INDEXER_ARANGO_PASSWORD "$(secret)"
keep MINIO_ROOT_USER "olympus-$(openssl rand -hex 4)"
keep MINIO_ROOT_PASSWORD "$(secret)"
keep OLYMPUS_API_KEY "oly_$(openssl rand -hex 32)"
api_key=$(stored OLYMPUS_API_KEY)
https_port=$(setting OLYMPUS_HTTPS_PORT 443)
# where to ask whether it is up: Caddy's address on this machine
probe=$(setting OLYMPUS_BIND_ADDRESS 127.0.0.1)
case "$probe" in 0.0.0.0 | "::" | "[::]") probe=127.0.0.1 ;; esac
if [ "$configure_only" = 1 ]; then
  echo "Settings and secrets are in .env; start with ./install.sh"
  exit 0
fi

# --- images and the stack --------------------------------------------------------------------
if [ "$upgrade" = 1 ] && [ "$(setting OLYMPUS_PIP_NO_INDEX 0)" = 1 ]; then
  echo "Rebuilding the images offline, from deploy/wheelhouse (volumes are kept)..."
  "${compose[@]}" build
elif [ "$upgrade" = 1 ]; then
  echo "Rebuilding the images on fresh base images (volumes are kept)..."
  "${compose[@]}" build --pull
else
  echo "Building the images (the first time takes several minutes)..."
  "${compose[@]}" build
fi
echo "Starting..."
"${compose[@]}" up -d

# --- ready? ------------------------------------------------------------------------------------
address="https://$domain"
[ "$https_port" = 443 ] || address="$address:$https_port"
echo -n "Waiting until Olympus answers at $address"
deadline=$((SECONDS + ${OLYMPUS_INSTALL_TIMEOUT_S:-600}))
# The local CA is not trusted by this machine yet: -k here only asks "is it up?".
until curl -fsSk --max-time 5 --resolve "$domain:$https_port:$probe" \
  -H "Authorization: Bearer $api_key" "$address/readyz" >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo
    die "not ready after ${OLYMPUS_INSTALL_TIMEOUT_S:-600} s: see '${compose[*]} ps' and '${compose[*]} logs'"
  fi
  echo -n "."
  sleep 5
done
echo

cat <<EOF

Olympus is running.
  Athena (the UI)  $address/
  API              $address/rag, $address/v1 (OpenAI-compatible), $address/mcp, $address/docs
  API key          $api_key   (tenant "default", scope admin; paste it in Athena's Settings)
EOF
if is_local "$domain"; then
  root=/data/caddy/pki/authorities/local/root.crt
  if [ "$engine" = podman ]; then copy="podman cp olympus_caddy_1:$root"; else copy="docker compose cp caddy:$root"; fi
  echo "  Certificate      Caddy's local CA; trust it: $copy olympus-ca.crt"
fi
echo "  More keys: ${compose[*]} exec gateway olympus keys create --tenant NAME --scope write"
