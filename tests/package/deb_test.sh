#!/usr/bin/env bash
# Builds the Debian package, lints it, installs it on this machine, runs pgproxy the way the
# systemd unit does (installed config, pgproxy user, -t then start, reload, stop), and purges it,
# checking that nothing is left behind. Needs root (dpkg -i); run by scripts/test.sh.
#   tests/package/deb_test.sh BUILD_DIR
set -uo pipefail
build=$(cd "${1:-build}" && pwd)
fail=0
check() {  # description, command...
  local what=$1
  shift
  if "$@" >/tmp/pgproxy-deb-check.log 2>&1; then
    echo "ok   - $what"
  else
    echo "FAIL - $what"
    sed 's/^/       /' /tmp/pgproxy-deb-check.log | tail -n 40
    fail=1
  fi
}
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ---- build and lint ---------------------------------------------------------------------------
if ! (cd "$build" && make --no-print-directory deb >deb-build.log 2>&1); then
  echo "FAIL - make deb"
  tail -n 60 "$build/deb-build.log"
  exit 1
fi
deb=$(ls "$build"/deb-build/pgproxy_*.deb | head -n 1)
echo "ok   - make deb: $(basename "$deb")"
check "lintian reports no errors" bash -c "lintian --fail-on error '$deb'"
check "mandoc -Tlint is clean on both man pages" \
  bash -c "mandoc -Tlint -W warning '$build/../man/pgproxy.8' '$build/../man/pgproxy.yaml.5' 2>&1 | tee /dev/stderr | (! grep -q .)"

# ---- install ----------------------------------------------------------------------------------
as_root dpkg --purge pgproxy >/dev/null 2>&1 || true
check "dpkg -i installs the package" as_root dpkg -i "$deb"
for f in /usr/sbin/pgproxy /etc/pgproxy/pgproxy.yaml /usr/share/man/man8/pgproxy.8.gz \
  /usr/share/man/man5/pgproxy.yaml.5.gz /lib/systemd/system/pgproxy.service \
  /etc/logrotate.d/pgproxy /usr/share/doc/pgproxy/README.md.gz \
  /usr/share/doc/pgproxy/examples/pgproxy.yaml /etc/pgproxy/plugins/tenant_allowlist.lua \
  /etc/pgproxy/plugins/query_denylist.lua; do
  check "installed $f" test -e "$f"
done
check "installed the HA recipe" sh -c 'test -e /usr/share/doc/pgproxy/ha.md || test -e /usr/share/doc/pgproxy/ha.md.gz'
check "the example plugins compile" sh -c 'printf "plugins: [{file: /etc/pgproxy/plugins/query_denylist.lua}]\nmappings: [{external: a.example.com, internal: 127.0.0.1}]\n" > /tmp/pgproxy-deb-plugins.yaml && /usr/sbin/pgproxy -t -c /tmp/pgproxy-deb-plugins.yaml'

check "the config is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' pgproxy | grep -q /etc/pgproxy/pgproxy.yaml"
check "system user pgproxy exists" getent passwd pgproxy
check "/var/log/pgproxy belongs to pgproxy" bash -c "[ \"\$(stat -c %U /var/log/pgproxy)\" = pgproxy ]"
check "systemd-analyze verify accepts the unit (no complaint at all)" \
  bash -c "out=\$(systemd-analyze verify /lib/systemd/system/pgproxy.service 2>&1); rc=\$?; echo \"\$out\"; [ \$rc = 0 ] && [ -z \"\$out\" ]"

# ---- run it as ExecStartPre/ExecStart/ExecReload do ---------------------------------------------
as_root install -d -o pgproxy -g pgproxy /run/pgproxy  # RuntimeDirectory=pgproxy
run_as_pgproxy() { as_root runuser -u pgproxy -- "$@"; }
check "ExecStartPre: pgproxy -t accepts the installed config" \
  run_as_pgproxy /usr/sbin/pgproxy -t -c /etc/pgproxy/pgproxy.yaml
# Waits up to 10 s for a shell condition.
eventually() {
  for _ in $(seq 1 100); do
    if eval "$1"; then return 0; fi
    sleep 0.1
  done
  return 1
}
log=$(mktemp)
as_root runuser -u pgproxy -- /usr/sbin/pgproxy -c /etc/pgproxy/pgproxy.yaml >"$log" 2>&1 &
check "ExecStart: pgproxy serves as the pgproxy user" \
  eventually "grep -q 'generation 1 is serving' '$log'"
check "it listens on the configured port 5400" bash -c "exec 3<>/dev/tcp/127.0.0.1/5400"
check "the pid file is written" test -s /run/pgproxy/pgproxy.pid
check "ExecReload: pgproxy -s reload" run_as_pgproxy /usr/sbin/pgproxy -s reload -c /etc/pgproxy/pgproxy.yaml
check "the reload rolled the workers" eventually "grep -q 'generation 2 is serving' '$log'"
check "logrotate's postrotate: pgproxy -s reopen" run_as_pgproxy /usr/sbin/pgproxy -s reopen -c /etc/pgproxy/pgproxy.yaml
check "pgproxy -s stop" run_as_pgproxy /usr/sbin/pgproxy -s stop -c /etc/pgproxy/pgproxy.yaml
check "every pgproxy process exited" eventually "! pgrep -u pgproxy -f /usr/sbin/pgproxy >/dev/null"
check "the pid file was removed" test ! -e /run/pgproxy/pgproxy.pid
if [ $fail != 0 ]; then
  echo "       pgproxy's output:"
  sed 's/^/       /' "$log"
fi
rm -f "$log"

# ---- purge --------------------------------------------------------------------------------------
as_root rm -rf /run/pgproxy
check "dpkg --purge removes the package" as_root dpkg --purge pgproxy
for f in /usr/sbin/pgproxy /etc/pgproxy /var/log/pgproxy /lib/systemd/system/pgproxy.service \
  /etc/logrotate.d/pgproxy; do
  check "purge removed $f" test ! -e "$f"
done
check "purge removed the pgproxy user" bash -c "! getent passwd pgproxy"
exit $fail
