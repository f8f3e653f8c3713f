#!/usr/bin/env bash
# Installs the Debian packages that rdbg's tests and demo drive (idempotent:
# apt runs only when something is missing).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dnsmasq      || need+=(dnsmasq-base)
have dig          || need+=(dnsutils)
have iperf3       || need+=(iperf3)
have redis-server || need+=(redis-server)
have redis-cli    || need+=(redis-tools)
have redis-benchmark || need+=(redis-tools)
have socat        || need+=(socat)
have curl         || need+=(curl)
have nghttp       || need+=(nghttp2-client)
have h2load       || need+=(nghttp2-client)
have nghttpd      || need+=(nghttp2-server)
have nc           || need+=(netcat-openbsd)
have ip           || need+=(iproute2)
# rdbg connect: netfilter redirects TCP to the root daemon (without it, TCP is read off the TUN).
have iptables-restore || need+=(iptables)
have python3      || need+=(python3)
have pgbench      || need+=(postgresql-client)
# The shells whose completion scripts the CLI tests check (bash -n, zsh -n, fish -n).
have zsh          || need+=(zsh)
have fish         || need+=(fish)
# A Prometheus text-format parser that is not ours, for the manager's metrics test.
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || need+=(python3-prometheus-client)
# rdbg intercept --mount: sshfs mounts the pod's files (FUSE; fusermount3 comes with fuse3).
have sshfs        || need+=(sshfs)
have fusermount3  || need+=(fuse3)
# The PostgreSQL server is not on PATH: bench/wire.ts runs /usr/lib/postgresql/VERSION/bin/initdb and postgres.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# redis-server's and postgresql's Debian packages start a system instance; the tests and benches run their own.
systemctl disable --now redis-server >/dev/null 2>&1 || true
systemctl disable --now postgresql >/dev/null 2>&1 || true
# h2spec for the fuzz tier, built with Go into the cache (outside the repository).
bash "$(dirname "$0")/install-h2spec.sh" >/dev/null
# systemd-resolved, unpacked into the cache (never installed) for the resolved-host DNS test.
bash "$(dirname "$0")/install-resolved.sh" >/dev/null
if [ ! -c /dev/net/tun ]; then
  echo "rdbg tests need /dev/net/tun (modprobe tun)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "the sandbox tests need root (network namespaces, TUN devices): run as root" >&2
  exit 1
fi
