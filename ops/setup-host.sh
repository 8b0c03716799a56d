#!/usr/bin/env bash
# Prepares a Debian worker host for archway, idempotently: host packages, binfmt_misc with
# qemu-user interpreters (F flag), and the kernel features the runtime relies on. Prints what
# it did and what is still missing; exits non-zero only when something required is missing.
set -uo pipefail
did=()
missing=()
say() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  say "must run as root (it installs packages and mounts binfmt_misc)"
  exit 1
fi

# package -> a command (or file) that proves it is installed. apt-get below installs with
# --no-install-recommends, so what mmdebstrap only recommends is listed here by name: arch-test
# (without it a foreign-arch build stops at once: "install arch-test for foreign architecture
# support"), gpg and libdpkg-perl (mmdebstrap infers the suite's keyring with them).
declare -A pkgs=(
  [btrfs-progs]=/usr/bin/btrfs
  [runc]=/usr/sbin/runc
  [qemu-user-static]=/usr/bin/qemu-aarch64-static
  [binfmt-support]=/usr/sbin/update-binfmts
  [mmdebstrap]=/usr/bin/mmdebstrap
  [zstd]=/usr/bin/zstd
  [catatonit]=/usr/bin/catatonit
  [busybox-static]=/bin/busybox
  [redis-server]=/usr/bin/redis-server
  [uidmap]=/usr/bin/newuidmap
  [slirp4netns]=/usr/bin/slirp4netns
  [arch-test]=/usr/bin/arch-test
  [gpg]=/usr/bin/gpg
  [libdpkg-perl]=/usr/share/perl5/Dpkg/Vendor/Debian.pm
  # network egress for jobs: nft rules, the DNS forwarder, the package cache; the seccomp
  # profile every container's filter is made from (ARCHWAY_SECCOMP_PROFILE); pasta
  [nftables]=/usr/sbin/nft
  [dnsmasq-base]=/usr/sbin/dnsmasq
  [apt-cacher-ng]=/usr/sbin/apt-cacher-ng
  [golang-github-containers-common]=/usr/share/containers/seccomp.json
  [passt]=/usr/bin/pasta
  # Commands the worker runs that a minimal Debian may lack: git (job sources and the host's git
  # mirror), ip (each egress container's veth), getcap/setcap (file capabilities kept through the
  # owner shift), curl (the egress benchmark's host-side download).
  [git]=/usr/bin/git
  [iproute2]=/usr/sbin/ip
  [libcap2-bin]=/usr/sbin/setcap
  [curl]=/usr/bin/curl
)
# Only the test suite needs these: the seccomp probe is cross-compiled, static, for each arch.
declare -A test_pkgs=(
  # The pages' browser tests drive Debian's headless chromium (never a downloaded browser).
  [chromium]=/usr/bin/chromium
  [gcc]=/usr/bin/x86_64-linux-gnu-gcc
  [libc6-dev]=/usr/include/x86_64-linux-gnu/sys/syscall.h
  [gcc-aarch64-linux-gnu]=/usr/bin/aarch64-linux-gnu-gcc
  [libc6-dev-arm64-cross]=/usr/aarch64-linux-gnu/lib/libc.a
  [gcc-powerpc64le-linux-gnu]=/usr/bin/powerpc64le-linux-gnu-gcc
  [libc6-dev-ppc64el-cross]=/usr/powerpc64le-linux-gnu/lib/libc.a
  [gcc-s390x-linux-gnu]=/usr/bin/s390x-linux-gnu-gcc
  [libc6-dev-s390x-cross]=/usr/s390x-linux-gnu/lib/libc.a
  # ops/ files: promtool checks and unit-tests the alert rules, systemd-analyze the units.
  [prometheus]=/usr/bin/promtool
  [systemd]=/usr/bin/systemd-analyze
)
want=()
for p in "${!pkgs[@]}" "${!test_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    want+=("$p")
  fi
done
if ((${#want[@]})); then
  say "installing: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # busybox-static replaces the dynamic busybox package; that is what we want (a static helper).
  if apt-get update -qq >/dev/null 2>&1 || true; then :; fi
  if apt-get install -y -qq --no-install-recommends "${want[@]}" >/tmp/archway-setup-apt.log 2>&1; then
    did+=("installed ${want[*]}")
    # Only promtool is wanted: the package also enables a Prometheus server, which a CI host
    # does not run (where systemd is not PID 1, nothing was started).
    if [[ " ${want[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 && did+=("disabled the prometheus service its package enabled")
    fi
  else
    say "apt-get install failed; see /tmp/archway-setup-apt.log"
  fi
fi
for p in "${!pkgs[@]}"; do
  [ -e "${pkgs[$p]}" ] || missing+=("package $p (apt-get install $p)")
done
for p in "${!test_pkgs[@]}"; do
  [ -e "${test_pkgs[$p]}" ] || say "not installed (only the tests need it): $p"
done

# binfmt_misc: mount it, enable the qemu-user interpreters. Debian's qemu-user-static registers
# them with the F (fix binary) flag, so they work inside containers that lack the interpreter.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  if mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null; then
    did+=("mounted binfmt_misc")
  else
    missing+=("binfmt_misc (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)")
  fi
fi
if [ -e /proc/sys/fs/binfmt_misc/register ]; then
  for q in aarch64 ppc64le s390x; do
    f=/proc/sys/fs/binfmt_misc/qemu-$q
    if [ ! -e "$f" ] || ! grep -q '^enabled' "$f"; then
      update-binfmts --enable "qemu-$q" >/dev/null 2>&1 || update-binfmts --import "qemu-$q" >/dev/null 2>&1 || true
      [ -e "$f" ] && did+=("enabled binfmt qemu-$q")
    fi
    if [ -e "$f" ] && grep -q '^enabled' "$f" && grep -q '^flags:.*F' "$f"; then :; else
      missing+=("binfmt qemu-$q with the F flag (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-$q)")
    fi
  done
fi

# runc gives every container (and every exec) a session keyring owned by its root's host uid.
# Each container has a uid range of its own, so these are per-container quotas; 200 keys / 20 kB
# (the defaults) are tight for a job that uses the keyring itself, so raise them.
# inotify, fanotify and namespace counts need nothing here: each container's user namespace is
# owned by its own root uid, so the kernel charges them to that uid (fs.inotify.max_user_* per
# container), never to host root, and archway sets user.max_* inside (ARCHWAY_CONTAINER_MAX_*).
want_keys=20000
if [ "$(cat /proc/sys/kernel/keys/maxkeys 2>/dev/null || echo 0)" -lt "$want_keys" ]; then
  printf 'kernel.keys.maxkeys = %s\nkernel.keys.maxbytes = 2000000\n' "$want_keys" > /etc/sysctl.d/90-archway.conf
  if sysctl -q -w kernel.keys.maxkeys="$want_keys" kernel.keys.maxbytes=2000000 2>/dev/null; then
    did+=("raised kernel.keys.maxkeys to $want_keys (/etc/sysctl.d/90-archway.conf)")
  else
    missing+=("kernel.keys.maxkeys >= $want_keys (sysctl -w kernel.keys.maxkeys=$want_keys kernel.keys.maxbytes=2000000)")
  fi
fi

modprobe btrfs 2>/dev/null || true
grep -qw btrfs /proc/filesystems || missing+=("btrfs in the kernel (modprobe btrfs)")
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || missing+=("loop devices (modprobe loop)")
userns=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)
[ "$userns" -gt 0 ] || missing+=("user namespaces (sysctl user.max_user_namespaces=15000)")

if ((${#did[@]})); then for d in "${did[@]}"; do say "did: $d"; done; else say "nothing to do: host already prepared"; fi
if ((${#missing[@]})); then
  for m in "${missing[@]}"; do say "missing: $m"; done
  exit 1
fi
say "ok"
