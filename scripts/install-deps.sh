#!/bin/sh
# Install the Debian packages berth builds, tests and demos with, or, given arguments, just those packages
# (the demo and the benchmarks name their extras). Idempotent: does nothing when all are present.
set -eu
PKGS="meson ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev
libcurl4-openssl-dev libarchive-dev libisal-dev libzstd-dev zlib1g-dev libssl-dev libjansson-dev libyaml-dev
libcmocka-dev libsodium-dev libsqlite3-dev
python3 python3-pytest python3-requests python3-cryptography
docker-registry skopeo umoci apache2-utils openssl zstd busybox-static attr
crun runc libmnl-dev libnftables-dev btrfs-progs nftables iproute2"
[ $# -gt 0 ] && PKGS="$*"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
