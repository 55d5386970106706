#!/usr/bin/env bash
# Installs the Debian 12 packages pgproxy needs to build, test and run its demo, if any is missing.
set -euo pipefail
packages=(
  build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev libyaml-dev libgtest-dev libgmock-dev libpq-dev
  postgresql postgresql-client openssl procps util-linux
  debhelper dpkg-dev fakeroot lintian mandoc adduser systemd logrotate
  python3 prometheus haproxy pgbouncer
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian postgresql package starts a system cluster on 5432; pgproxy's tests and demo use their
# own throwaway clusters on free ports and do not need it.
