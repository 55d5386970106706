#!/usr/bin/env bash
# Throwaway PostgreSQL clusters with TLS, for the integration tests and the demo.
#
#   pg_sandbox.sh start DIR PORT1 PORT2   test CA + two clusters, host1 on PORT1 and host2 on PORT2,
#                                         and proxy-ca with pgproxy's own certificates (proxy-*.crt)
#   pg_sandbox.sh stop DIR                stop every cluster in DIR (DIR is left for the caller)
#   pg_sandbox.sh primary DIR NAME PORT [ADDRESSES]
#                                         one more cluster NAME in a started DIR
#   pg_sandbox.sh standby DIR NAME PORT PRIMARY_PORT
#                                         a streaming standby of the cluster on PRIMARY_PORT
#   pg_sandbox.sh promote DIR NAME | stop-one DIR NAME
#
# The certificates name host1.example.com / host2.example.com, so verify-full through pgproxy proves
# which backend answered; each cluster's cluster_name is its host label. Everything listens on
# 127.0.0.1 only. As root, initdb and postgres run as the postgres user (they refuse root).
set -euo pipefail

cmd=${1:?usage: pg_sandbox.sh start DIR PORT1 PORT2 | stop DIR}
dir=${2:?directory}

pgbin=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  echo "pg_sandbox: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

make_cert() {  # name [ca] [dns name]: a certificate for DNS name (default name.example.com)
  local name=$1 ca=${2:-ca} dns=${3:-$1.example.com}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$dns" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n' "$dns" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -CAcreateserial \
    -days 30 -out "$dir/$name.crt" -extfile "$dir/$name.ext" 2>/dev/null
}

make_ca() {  # name subject
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -keyout "$dir/$1.key" -out "$dir/$1.crt" -subj "/CN=$2" 2>/dev/null
}

start_cluster() {  # name port [listen_addresses]
  local name=$1 port=$2 data="$dir/$1" addresses=${3:-127.0.0.1}
  as_pg "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/$name-initdb.log" 2>&1 || {
    cat "$dir/$name-initdb.log" >&2
    exit 1
  }
  cp "$dir/$name.crt" "$data/server.crt"
  cp "$dir/$name.key" "$data/server.key"
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '$addresses'
port = $port
unix_socket_directories = '$dir'
cluster_name = '$name'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = ${PG_MAX_CONNECTIONS:-120}
shared_buffers = 32MB
CONF
  # pgproxy_pw logs in with a cleartext password (tests check it never reaches pgproxy's logs).
  # pgproxy_scram uses SCRAM, whose -PLUS variant the terminate tests need. The pgproxy_auth_*
  # users need each method once, for pgproxy's own logins (authenticate: true). pgproxy_authq runs
  # auth.query; the pgproxy_aq_* users are looked up by it (not in pgproxy's auth file).
  # pgproxy_auth_sasl has a password that SASLprep changes.
  printf 'local all all trust\nhost all pgproxy_pw 127.0.0.1/32 password\nhost all pgproxy_scram 127.0.0.1/32 scram-sha-256\nhost all pgproxy_auth_scram 127.0.0.1/32 scram-sha-256\nhost all pgproxy_auth_md5 127.0.0.1/32 md5\nhost all pgproxy_auth_pw 127.0.0.1/32 password\nhost all pgproxy_pool 127.0.0.1/32 scram-sha-256\nhost all pgproxy_pool_md5 127.0.0.1/32 md5\nhost all pgproxy_authq 127.0.0.1/32 scram-sha-256\nhost all pgproxy_aq_scram 127.0.0.1/32 scram-sha-256\nhost all pgproxy_aq_md5 127.0.0.1/32 md5\nhost all pgproxy_auth_sasl 127.0.0.1/32 scram-sha-256\nhost all pgproxy_cert_md5 127.0.0.1/32 md5\nhost all all 127.0.0.0/8 trust\nhost replication all 127.0.0.1/32 trust\n' >"$data/pg_hba.conf"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$data/server.crt" "$data/server.key" "$data/pg_hba.conf"
  fi
  chmod 600 "$data/server.key"
  as_pg "$pgbin/pg_ctl" -D "$data" -l "$dir/$name.log" -w -t 60 start >/dev/null || {
    cat "$dir/$name.log" >&2
    exit 1
  }
}

case $cmd in
  start)
    port1=${3:?port for host1}
    port2=${4:?port for host2}
    mkdir -p "$dir"
    chmod 755 "$dir"
    make_ca ca "pgproxy test CA"
    # pgproxy's own certificates (tls: terminate) come from a second CA, so a test can tell
    # which side of pgproxy a client's verification reached.
    make_ca proxy-ca "pgproxy test proxy CA"
    make_cert proxy-host1 proxy-ca host1.example.com
    make_cert proxy-host1b proxy-ca host1.example.com
    make_cert proxy-host2 proxy-ca host2.example.com
    make_cert proxy-wild proxy-ca '*.example.com'
    make_cert host1
    make_cert host2
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir"
    fi
    start_cluster host1 "$port1"
    start_cluster host2 "$port2"
    ;;
  stop)
    for pid in "$dir"/*/postmaster.pid; do
      if [ -f "$pid" ]; then
        as_pg "$pgbin/pg_ctl" -D "$(dirname "$pid")" -m immediate -w stop >/dev/null 2>&1 || true
      fi
    done
    ;;
  primary)
    name=${3:?name}
    make_cert "$name"
    start_cluster "$name" "${4:?port}" "${5:-127.0.0.1}"
    ;;
  standby)
    name=${3:?name} port=${4:?port} primary=${5:?primary port}
    as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$dir/$name" -R \
      -X stream >"$dir/$name-basebackup.log" 2>&1 || {
      cat "$dir/$name-basebackup.log" >&2
      exit 1
    }
    printf "port = %s\ncluster_name = '%s'\n" "$port" "$name" >>"$dir/$name/postgresql.conf"
    as_pg "$pgbin/pg_ctl" -D "$dir/$name" -l "$dir/$name.log" -w -t 60 start >/dev/null || {
      cat "$dir/$name.log" >&2
      exit 1
    }
    ;;
  promote)
    as_pg "$pgbin/pg_ctl" -D "$dir/${3:?name}" -w promote >/dev/null
    ;;
  stop-one)
    as_pg "$pgbin/pg_ctl" -D "$dir/${3:?name}" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: pg_sandbox.sh start DIR PORT1 PORT2 | stop DIR | primary | standby | promote | stop-one" >&2
    exit 2
    ;;
esac
