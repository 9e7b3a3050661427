#!/usr/bin/env bash
# Builds the QuickFIX C++ peer of `baton bench --peer quickfix` against Debian's libquickfix-dev,
# installing it (and g++, pkg-config) when missing. The binary goes to the directory given as the
# only argument (default: target/peers/quickfix in the repository), never into the source tree.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../../target/peers/quickfix}"

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists quickfix 2>/dev/null || missing+=(libquickfix-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
# -O2 like a release build of the library it links; C++14 because Debian's QuickFIX 1.15 headers
# still carry dynamic exception specifications, which C++17 (g++'s default) refuses. Written to a temporary name first so a failed build never
# leaves a half-written binary where the bench looks for one.
# shellcheck disable=SC2046
g++ -std=c++14 -O2 -Wall -Wno-deprecated -o "$out/quickfix-peer.tmp" "$here/peer.cpp" $(pkg-config --cflags --libs quickfix) -lpthread
mv "$out/quickfix-peer.tmp" "$out/quickfix-peer"
echo "$out/quickfix-peer"
