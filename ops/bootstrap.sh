#!/usr/bin/env bash
# Makes a fresh clone runnable: host packages (ops/setup-host.sh, as root) when something the
# runtime needs is missing, then `npm ci` when node_modules is missing (its `prepare` compiles dist/). Quiet when all is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need_host=0
for cmd in btrfs runc mkfs.btrfs zstd mmdebstrap arch-test gpg catatonit redis-server busybox slirp4netns pasta git curl aarch64-linux-gnu-gcc s390x-linux-gnu-gcc powerpc64le-linux-gnu-gcc promtool systemd-analyze; do
  command -v "$cmd" >/dev/null 2>&1 || need_host=1
done
# By path: /usr/sbin is not on a user's PATH. nft, dnsmasq, apt-cacher-ng: network egress for jobs.
for f in /usr/sbin/nft /usr/sbin/dnsmasq /usr/sbin/apt-cacher-ng /usr/sbin/ip /usr/sbin/setcap /usr/share/containers/seccomp.json \
  /usr/share/perl5/Dpkg/Vendor/Debian.pm; do
  [ -e "$f" ] || need_host=1
done
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || need_host=1
[ -e /usr/share/containers/seccomp.json ] || need_host=1
[ "$(cat /proc/sys/kernel/keys/maxkeys 2>/dev/null || echo 0)" -ge 2000 ] || need_host=1
if [ "$need_host" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "archway: host packages missing; running ops/setup-host.sh" >&2
    bash "$root/ops/setup-host.sh" >&2
  else
    echo "archway: host packages are missing; run 'sudo bash ops/setup-host.sh' first" >&2
  fi
fi
if [ ! -e "$root/node_modules/esbuild/package.json" ]; then
  echo "archway: installing npm dependencies (npm ci)" >&2
  (cd "$root" && npm ci --no-audit --no-fund) >&2
fi
