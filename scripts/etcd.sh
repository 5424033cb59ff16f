#!/usr/bin/env bash
# Installs what the etcd backend and its tests need, when missing:
#   - etcd 3.4 server and etcdctl (Debian `etcd-server`, `etcd-client`): the tests start
#     their own nodes on loopback ports; nothing is started here.
#   - protoc and its well-known types (Debian `protobuf-compiler`, `libprotobuf-dev`):
#     `etcd-client` compiles etcd's protobufs at build time.
# Idempotent: a second run installs nothing. Needs root (CI runs as root) or sudo.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/descriptor.proto), imported by etcd's protos.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# The TLS test makes its CA and certificates with the openssl command line tool.
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ "${#need[@]}" -eq 0 ]; then
    echo "etcd.sh: etcd, etcdctl and protoc already installed"
else
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "etcd.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The Debian package may ship a service unit; on machines with systemd it would take the
# default ports. Tests choose their own ports, so it is harmless, but say what is there.
etcd --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
protoc --version
