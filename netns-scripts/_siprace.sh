#!/bin/sh
# Runs `siprace lab "$@"`. The topology lives in one place only, src/lab/topology.rs;
# these scripts are thin wrappers around the binary.
# Binary: $SIPRACE_BIN, else target/release/siprace, else target/debug/siprace,
# else `cargo run --release`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -n "${SIPRACE_BIN:-}" ]; then
    exec "$SIPRACE_BIN" lab "$@"
elif [ -x "$root/target/release/siprace" ]; then
    exec "$root/target/release/siprace" lab "$@"
elif [ -x "$root/target/debug/siprace" ]; then
    exec "$root/target/debug/siprace" lab "$@"
else
    cd "$root" && exec cargo run --quiet --release --bin siprace -- lab "$@"
fi
