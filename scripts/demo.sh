#!/usr/bin/env bash
# Runs pgproxy on an embedded default: two throwaway PostgreSQL clusters with TLS (host1 and
# host2.example.com, certificates from a throwaway CA) behind pgproxy on 127.0.0.1:5400.
# Prints the psql commands that show SNI routing; Ctrl-C stops everything and removes the clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build=${BUILD_DIR:-build}
port=${PGPROXY_DEMO_PORT:-5400}
pg1=${PGPROXY_DEMO_PG1:-15432}
pg2=${PGPROXY_DEMO_PG2:-15433}
admin=${PGPROXY_DEMO_ADMIN:-9540}
dir=$(mktemp -d /tmp/pgproxy-demo-XXXXXX)
chmod 755 "$dir"
cleanup() {
  tests/integration/pg_sandbox.sh stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
tests/integration/pg_sandbox.sh start "$dir" "$pg1" "$pg2"
echo "demo-token" >"$dir/admin-token"
cat >"$dir/pgproxy.yaml" <<YAML
listen:
  address: "127.0.0.1"
  port: $port
debug: false
workers: 2
pid_file: $dir/pgproxy.pid
# The psql console (dbname=pgproxy, trusted from this host), the REST API and the dashboard.
admin:
  listen: "127.0.0.1:$admin"
  token_file: $dir/admin-token
  users: [postgres]
default: "host1.example.com"
mappings:
  - external: "host1.example.com"
    internal: "127.0.0.1"
    port: $pg1
  - external: "host2.example.com"
    internal: "127.0.0.1"
    port: $pg2
  # pgproxy terminates TLS with its own certificate and balances over both clusters.
  - external: "db.example.com"
    tls: terminate
    certificate: $dir/proxy-wild.crt
    key: $dir/proxy-wild.key
    backend_tls: require
    backends:
      - { host: "127.0.0.1", port: $pg1 }
      - { host: "127.0.0.1", port: $pg2 }
    health_check: { interval: 2s }
YAML
cat <<TXT

pgproxy demo: two PostgreSQL clusters behind pgproxy on 127.0.0.1:$port (config: $dir/pgproxy.yaml)
In another terminal (hostaddr= stands in for DNS):

  psql "host=host1.example.com hostaddr=127.0.0.1 port=$port sslmode=verify-full sslrootcert=$dir/ca.crt user=postgres" -c 'show cluster_name'
  psql "host=host2.example.com hostaddr=127.0.0.1 port=$port sslmode=verify-full sslrootcert=$dir/ca.crt user=postgres" -c 'show cluster_name'
  psql "host=127.0.0.1 port=$port sslmode=disable user=postgres" -c 'show cluster_name'     # plaintext: the default mapping
  psql "host=db.example.com hostaddr=127.0.0.1 port=$port sslmode=verify-full sslrootcert=$dir/proxy-ca.crt user=postgres" -c 'show cluster_name'   # TLS terminated by pgproxy, round robin over both

  psql "host=127.0.0.1 port=$port sslmode=disable dbname=pgproxy user=postgres" -c 'SHOW BACKENDS'   # the admin console
  curl -s -H "Authorization: Bearer demo-token" http://127.0.0.1:$admin/api/v1/mappings           # the REST API
  open http://127.0.0.1:$admin/ in a browser (token: demo-token)                                    # the dashboard

  $build/pgproxy -s reload -c $dir/pgproxy.yaml     # re-read the config
  $build/pgproxy -s stop -c $dir/pgproxy.yaml       # or Ctrl-C here

TXT
"$build/pgproxy" -c "$dir/pgproxy.yaml"
