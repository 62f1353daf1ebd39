#!/usr/bin/env bash
# Installs what the tests need and runs them all: formatting, lints, unit,
# property and integration tests (the lab tests need root; without it they
# say they did not run).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for tool in ip:iproute2 nft:nftables ping:iputils-ping; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_pkgs+=("${tool##*:}")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "== missing ${need_pkgs[*]} and cannot install them (not root or no apt-get): the lab tests will say they did not run"
  fi
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets 2>&1 | tee /tmp/siprace-test.log
echo "== engine benchmark (quick)"
cargo bench --bench engine -- --warm-up-time 1 --measurement-time 2 2>&1 | grep -E "^race|time:" || true
