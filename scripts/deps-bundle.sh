#!/usr/bin/env bash
# Downloads the .deb files of every C++ dependency onebit's build needs into DIR, for a node
# without network (a GPU node, an air-gapped cluster). On that node:
#   ONEBIT_DEPS=DIR scripts/setup.sh
# unpacks them into a project-local prefix (dpkg -x: no root, no network) and builds against
# the node's own python3 torch. Run this on a Debian 12 / Ubuntu machine with package access.
#
#   scripts/deps-bundle.sh DIR [PACKAGE ...]   # default: the whole list below
set -euo pipefail
[[ $# -ge 1 && "$1" != -h && "$1" != --help ]] || {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 ]] && exit 0 || exit 2
}
DIR=$1
shift
# Headers, CMake/pkg-config files and the shared libraries they point to; pkgconf because GPU
# nodes often lack pkg-config; libgloo-dev for c10d's ProcessGroupGloo.hpp (headers only).
PKGS=(libyaml-cpp-dev libyaml-cpp0.7 catch2 libcli11-dev nlohmann-json3-dev
      libsentencepiece-dev libsentencepiece0
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libgloo-dev pkgconf-bin libpkgconf3)
(($#)) && PKGS=("$@")
command -v apt-get >/dev/null || { echo "deps-bundle: apt-get not found (needs Debian/Ubuntu)" >&2; exit 1; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
tmp=$(mktemp -d "$DIR/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt downloads as its own user
(cd "$tmp" && apt-get download "${PKGS[@]}") >&2 ||
  { echo "deps-bundle: apt-get download failed (run apt-get update, or check the package names)" >&2; exit 1; }
for f in "$tmp"/*.deb; do mv -f "$f" "$DIR/"; done
# The manifest lists what the bundle holds (name version architecture), one package a line.
manifest=$tmp/MANIFEST
for f in "$DIR"/*.deb; do dpkg-deb -W --showformat='${Package} ${Version} ${Architecture}\n' "$f"; done | sort >"$manifest"
mv -f "$manifest" "$DIR/MANIFEST"
echo "deps-bundle: $(wc -l <"$DIR/MANIFEST") packages in $DIR" >&2
