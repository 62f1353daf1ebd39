#!/usr/bin/env bash
# Installs what the tests need and runs them all: formatting, lints, unit,
# property and integration tests (the lab tests need root; without it they
# say they did not run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools of the lab tests (tests/lab.rs, tests/lab_e2e.rs, tests/bench_clients.rs) and of
# the SCTP VM (tests/sctp_vm.rs: qemu, and xz to unpack the guest kernel): TOOL:DEBIAN-PACKAGE.
# (/usr/sbin holds ip, nft, sysctl and kamailio: make sure it is searched.)
export PATH="$PATH:/usr/sbin:/sbin"
need_pkgs=()
for tool in ip:iproute2 nft:nftables ping:iputils-ping sysctl:procps sipp:sip-tester kamailio:kamailio sipsak:sipsak baresip:baresip tshark:tshark qemu-system-x86_64:qemu-system-x86 xz:xz-utils; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_pkgs+=("${tool##*:}")
done
# Kamailio modules packaged apart (tests/outbound_kamailio.rs, the TLS lab): MODULE:DEBIAN-PACKAGE.
for module in outbound.so:kamailio-outbound-modules tls.so:kamailio-tls-modules; do
  compgen -G "/usr/lib/*/kamailio/modules/${module%%:*}" >/dev/null || need_pkgs+=("${module##*:}")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need_pkgs[*]}"
    # Installing must not start any service (e.g. a kamailio on the host's
    # interfaces): a temporary policy-rc.d refuses every start.
    policy_made=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      policy_made=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark (tests/bench_clients.rs): no setuid dumpcap question.
    if command -v debconf-set-selections >/dev/null 2>&1; then
      echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    if [ -n "$policy_made" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  else
    echo "== missing ${need_pkgs[*]} and cannot install them (not root or no apt-get): the lab tests will say they did not run"
  fi
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== library without the CLI's dependencies"
cargo build --quiet --lib --no-default-features
echo "== cargo test (tests/sctp_vm.rs runs the SCTP suite in a qemu VM: netns-scripts/sctp-vm.sh)"
cargo test --all-targets 2>&1 | tee "${TMPDIR:-/tmp}/siprace-test.log"
echo "== engine micro-benchmark and loopback dials per second"
cargo bench --quiet --bench engine -- --warm-up-time 1 --measurement-time 2 2>&1 | grep -E "^race|time:" || true
cargo bench --quiet --bench dials 2>&1 | grep -E "^dials" || true
echo "== soak: 5000 dials in one process (fails on a failed healthy dial, a double winner or descriptor growth)"
SIPRACE_SOAK_DIALS=5000 cargo bench --quiet --bench soak
echo "== fuzz targets, 50000 runs each from a fixed seed (so that none rots; needs the nightly toolchain)"
bash scripts/fuzz.sh --runs 50000
echo "== siprace bench --quick (the CI benchmark and its acceptance checks)"
if [ "$(id -u)" = 0 ]; then
  cargo build --release --quiet
  # A lab name of this run's own, so that two runs on one machine never share (or remove) a lab.
  ./target/release/siprace bench --quick --lab "ci$$" --out "${TMPDIR:-/tmp}/siprace-results"
  echo "== siprace bench --census --quick (two clients, two sweep points; the full census: scripts/census-clients.sh, then --census)"
  ./target/release/siprace bench --census --quick --lab "cc$$" --out "${TMPDIR:-/tmp}/siprace-results"
else
  echo "bench: not run (needs root for the lab)"
fi
