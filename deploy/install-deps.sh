#!/bin/sh
# Installs the Debian 12 packages corral builds and tests against, and nothing else.
# Idempotent: packages already present are skipped, so a second run costs one dpkg
# query. Run as root (or with sudo); when not root it prints the command to run.
set -eu

# Build: compiler and build system, then the libraries named in DESIGN.md.
PKGS="build-essential cmake pkg-config
libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev protobuf-compiler
libsqlite3-dev sqlite3 libssl-dev openssl libyaml-dev libcunit1-dev libopenblas-dev
libmujoco-dev libegl-dev libegl-mesa0 libgl1-mesa-dri libosmesa6-dev
libmicrohttpd-dev libcjson-dev
clang libclang-rt-14-dev iproute2 iptables python3
python3-torch"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=sudo
    else
        echo "install-deps: missing packages:$missing" >&2
        echo "install-deps: run as root: apt-get update && apt-get install -y$missing" >&2
        exit 1
    fi
else
    SUDO=
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
