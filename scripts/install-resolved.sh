#!/usr/bin/env bash
# systemd-resolved for the sandbox test dns-resolved-host, unpacked into a
# cache outside the repository and never installed: the package's postinst
# would turn the machine's /etc/resolv.conf into a link to resolved's stub,
# and it pins systemd to its own version. The test runs it inside a private
# mount namespace (test/helpers/resolved-host.ts). Idempotent.
set -euo pipefail
CACHE=/var/cache/rdbg/resolved
if [ -x "$CACHE/root/usr/lib/systemd/systemd-resolved" ] && [ -x "$CACHE/root/usr/bin/resolvectl" ] && compgen -G "$CACHE/root/usr/lib/*/systemd/libsystemd-shared-*.so" >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
command -v dbus-daemon >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq --no-install-recommends dbus-daemon >/dev/null; }
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# _apt downloads into a directory it can write.
chmod 777 "$tmp"
# The shared library of the same version too: it goes over the host's only inside the test's mount namespace.
pkgs=(systemd-resolved libsystemd-shared)
(cd "$tmp" && apt-get download -qq "${pkgs[@]}" 2>/dev/null) || { apt-get update -qq; (cd "$tmp" && apt-get download -qq "${pkgs[@]}"); }
rm -rf "$CACHE/root"
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$CACHE/root"; done
# merged /usr: the package ships /lib/systemd, which is /usr/lib/systemd here.
if [ -d "$CACHE/root/lib" ]; then
  mkdir -p "$CACHE/root/usr/lib"
  cp -a "$CACHE/root/lib/." "$CACHE/root/usr/lib/"
  rm -rf "$CACHE/root/lib"
fi
"$CACHE/root/usr/lib/systemd/systemd-resolved" --version | head -1
