#!/usr/bin/env bash
# Installs the Debian 12 packages pgproxy needs to build, test and run its demo, if any is missing.
set -euo pipefail
packages=(
  build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev libyaml-dev libidn-dev liblua5.4-dev libgtest-dev libgmock-dev libpq-dev
  libbpf-dev bpftool clang
  postgresql postgresql-client openssl procps util-linux
  debhelper dpkg-dev fakeroot lintian mandoc adduser systemd logrotate
  python3 prometheus haproxy pgbouncer
  python3-psycopg python3-asyncpg
  default-jdk-headless libpostgresql-jdbc-java
  clang libclang-rt-14-dev
  chromium chromium-driver python3-selenium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm (the pool tests' node-postgres client) by command: a machine may have them from
# another source than Debian's packages, which would then conflict.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian postgresql package starts a system cluster on 5432; pgproxy's tests and demo use their
# own throwaway clusters on free ports and do not need it.
# node-postgres comes from npm: Debian's node-pg needs Debian's own nodejs (node-acorn depends on
# nodejs:any), which a machine with Node.js from elsewhere (NodeSource's, as here) cannot install
# beside it. The tests (PoolClients.NodePostgres) find it here.
node_prefix=${PGPROXY_NODE_PREFIX:-/usr/local/lib/pgproxy-test-node}
if [ ! -f "$node_prefix/node_modules/pg/package.json" ]; then
  echo "installing node-postgres into $node_prefix"
  $sudo_cmd mkdir -p "$node_prefix"
  $sudo_cmd npm install --silent --no-audit --no-fund --prefix "$node_prefix" pg@8 >/dev/null
fi
