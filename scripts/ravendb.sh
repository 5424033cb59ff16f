#!/usr/bin/env bash
# Installs a RavenDB 4.1 server for distlock's tests into <repo>/.cache/ravendb (git-ignored),
# from registry packages only (see shared/BACKENDS.md for why these exact versions):
#   - PyPI pyravendb-embedded==4.1.1.4 (sdist): the server DLLs (netcoreapp2.1)
#   - PyPI dotnetcore2==2.1.23 (manylinux1 wheel): the dotnet host + Microsoft.NETCore.App 2.1
#   - crates.io openssl-src =111.28.2: OpenSSL 1.1.1 built from source, since .NET Core 2.1
#     aborts with Debian 12's OpenSSL 3 and Debian 12 ships no libssl1.1.
#
# Usage:
#   scripts/ravendb.sh install   # idempotent; a few ms when everything is cached
#   scripts/ravendb.sh paths     # prints the paths (fails if not installed)
#   scripts/ravendb.sh clean     # removes the install
#
# Needs only: the Rust toolchain (cargo), python3 with pip, gcc, make, perl (for OpenSSL's config).
# Measured here (2 cores, shared): from nothing 462 s wall / 160 s CPU with a load average of
# 6-9 from other builds (OpenSSL's build dominates; about a minute on an idle machine);
# about 125 MB installed; a cached `install` takes about 0.02 s.
# DISTLOCK_RAVENDB_HOME overrides the install folder (the tests read the same variable).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${DISTLOCK_RAVENDB_HOME:-$REPO_ROOT/.cache/ravendb}"

RAVEN_PKG="pyravendb-embedded==4.1.1.4"
DOTNET_PKG="dotnetcore2==2.1.23"
OPENSSL_SRC_VERSION="111.28.2"

SERVER_DIR="$HOME_DIR/server"
DOTNET_DIR="$HOME_DIR/dotnet"
SSL_DIR="$HOME_DIR/openssl"
STAMP="$HOME_DIR/.installed"
STAMP_CONTENT="$RAVEN_PKG $DOTNET_PKG openssl-src=$OPENSSL_SRC_VERSION"

log() { printf 'ravendb.sh: %s\n' "$*" >&2; }

print_paths() {
    cat <<EOF
DISTLOCK_RAVENDB_HOME=$HOME_DIR
dotnet=$DOTNET_DIR/dotnet
server=$SERVER_DIR/Raven.Server.dll
ld_library_path=$SSL_DIR
EOF
}

installed() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_CONTENT" \
        && -x "$DOTNET_DIR/dotnet" && -f "$SERVER_DIR/Raven.Server.dll" \
        && -f "$SSL_DIR/libssl.so.1.1" && -f "$SSL_DIR/libcrypto.so.1.1" ]]
}

install_server() {
    [[ -f "$SERVER_DIR/Raven.Server.dll" ]] && return 0
    local tmp
    tmp="$(mktemp -d)"
    log "downloading $RAVEN_PKG (sdist)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        --dest "$tmp" "$RAVEN_PKG"
    local sdist
    sdist="$(find "$tmp" -maxdepth 1 -name 'pyravendb*embedded*' -type f | head -n 1)"
    [[ -n "$sdist" ]] || { log "no sdist downloaded for $RAVEN_PKG"; exit 1; }
    mkdir -p "$tmp/x"
    case "$sdist" in
        *.zip) python3 -m zipfile -e "$sdist" "$tmp/x" ;;
        *) tar -xf "$sdist" -C "$tmp/x" ;;
    esac
    local dll
    dll="$(find "$tmp/x" -path '*RavenDBServer/Raven.Server.dll' | head -n 1)"
    [[ -n "$dll" ]] || { log "Raven.Server.dll not found in $sdist"; exit 1; }
    rm -rf "$SERVER_DIR.part"
    cp -a "$(dirname "$dll")" "$SERVER_DIR.part"
    mv "$SERVER_DIR.part" "$SERVER_DIR"
    rm -rf "$tmp"
}

install_dotnet() {
    [[ -x "$DOTNET_DIR/dotnet" ]] && return 0
    local tmp
    tmp="$(mktemp -d)"
    log "downloading $DOTNET_PKG (manylinux1 wheel)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
        --platform manylinux1_x86_64 --python-version 3 --implementation py --abi none \
        --dest "$tmp" "$DOTNET_PKG" 2>/dev/null \
        || python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
            --dest "$tmp" "$DOTNET_PKG"
    local wheel
    wheel="$(find "$tmp" -maxdepth 1 -name 'dotnetcore2*.whl' | head -n 1)"
    [[ -n "$wheel" ]] || { log "no wheel downloaded for $DOTNET_PKG"; exit 1; }
    mkdir -p "$tmp/x"
    python3 -m zipfile -e "$wheel" "$tmp/x"
    [[ -f "$tmp/x/dotnetcore2/bin/dotnet" ]] || { log "dotnet host not found in $wheel"; exit 1; }
    chmod +x "$tmp/x/dotnetcore2/bin/dotnet"
    rm -rf "$DOTNET_DIR.part"
    mv "$tmp/x/dotnetcore2/bin" "$DOTNET_DIR.part"
    mv "$DOTNET_DIR.part" "$DOTNET_DIR"
    rm -rf "$tmp"
}

install_openssl() {
    [[ -f "$SSL_DIR/libssl.so.1.1" && -f "$SSL_DIR/libcrypto.so.1.1" ]] && return 0
    local tmp
    tmp="$(mktemp -d)"
    log "fetching crates.io openssl-src =$OPENSSL_SRC_VERSION with cargo vendor"
    mkdir -p "$tmp/p/src"
    cat >"$tmp/p/Cargo.toml" <<EOF
[package]
name = "fetch-openssl-src"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
openssl-src = "=$OPENSSL_SRC_VERSION"
EOF
    : >"$tmp/p/src/lib.rs"
    # A throwaway project outside the workspace; --versioned-dirs keeps the name predictable.
    (cd "$tmp/p" && cargo vendor --quiet --versioned-dirs "$tmp/vendor" >/dev/null)
    # The folder is named openssl-src-<version>+<openssl version>.
    local src
    src="$(find "$tmp/vendor" -maxdepth 2 -path "*/openssl-src-$OPENSSL_SRC_VERSION*/openssl" -type d | head -n 1)"
    [[ -n "$src" && -x "$src/config" ]] || { log "OpenSSL sources not found under $src"; exit 1; }
    log "building OpenSSL 1.1.1 shared libraries (about a minute on 2 cores)"
    (cd "$src" && ./config shared no-tests >"$tmp/config.log" 2>&1 \
        && make -j"$(nproc)" build_libs >"$tmp/make.log" 2>&1) \
        || { log "OpenSSL build failed; logs kept in $tmp"; exit 1; }
    rm -rf "$SSL_DIR.part"
    mkdir -p "$SSL_DIR.part"
    cp -L "$src/libssl.so.1.1" "$src/libcrypto.so.1.1" "$SSL_DIR.part/"
    mv "$SSL_DIR.part" "$SSL_DIR"
    rm -rf "$tmp"
}

cmd_install() {
    if installed; then
        print_paths
        return 0
    fi
    local start=$SECONDS
    mkdir -p "$HOME_DIR"
    # Each part is moved into place only when complete, so an interrupted run resumes cleanly.
    install_server
    install_dotnet
    install_openssl
    printf '%s' "$STAMP_CONTENT" >"$STAMP"
    log "installed in $((SECONDS - start)) s"
    print_paths
}

case "${1:-}" in
    install) cmd_install ;;
    paths)
        installed || { log "not installed: run scripts/ravendb.sh install"; exit 1; }
        print_paths
        ;;
    clean) rm -rf "$HOME_DIR" ;;
    *)
        echo "usage: $0 install|paths|clean" >&2
        exit 2
        ;;
esac
