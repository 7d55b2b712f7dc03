#!/usr/bin/env bash
# Installs every Debian 12 package poolsim needs to build, test and run.
# Idempotent: prints nothing and touches nothing when all are present.
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libboost-program-options-dev libeigen3-dev nlohmann-json3-dev
  python3-dev pybind11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpq-dev postgresql
  python3-numpy python3-pandas python3-matplotlib python3-pytest
  python3-nbclient python3-ipykernel python3-nbformat
  python3-sqlalchemy python3-psycopg2 python3-distributed
  python3-psycopg python3-psycopg-pool
  pgbouncer
  libhikaricp-java libpostgresql-jdbc-java libslf4j-java openjdk-17-jdk-headless
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
