#!/bin/sh
# The guest test script of the SCTP VM: checks that this kernel really has
# SCTP, then runs the guest tests of tests/sctp_vm.rs (the ones named
# guest_*, which are #[ignore]d on the host and refuse to run outside the
# VM) one at a time against /bin/siprace; each one's output (the dial
# timelines) follows the summary.
# Its exit status is the VM's (netns-scripts/sctp-vm.sh exits with it).
set -eu
. /vm/config

if ! grep -q '^sctp ' /proc/modules; then
    echo "guest: the sctp module is not loaded"
    exit 1
fi
if [ ! -x /vm/guest-tests ]; then
    echo "guest: no guest test binary in the initramfs (--guest-tests)"
    exit 1
fi
echo "guest: $(/bin/siprace --version)"

export SIPRACE_VM_GUEST=1 SIPRACE_BIN=/bin/siprace RUST_BACKTRACE=1
cd /tmp
exec /vm/guest-tests --ignored --test-threads=1 --show-output "${GUEST_FILTER:-guest_}"
