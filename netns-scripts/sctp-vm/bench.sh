#!/bin/sh
# A guest script for `netns-scripts/sctp-vm.sh --script netns-scripts/sctp-vm/bench.sh`:
# runs `siprace bench --sctp` on the namespace lab inside the VM, so that the
# benchmark's tables get SCTP cases (<scenario>/sctp) next to UDP and TCP.
# Its arguments come from the harness's --guest-args (default: the quick
# healthy and ipv6-blackholed scenarios). The tables are printed on the
# console; the result files stay in the VM.
#
# The figures are those of an emulated CPU: compare the rows of one run
# with each other, not with a run on the host. The acceptance checks'
# absolute margins (e.g. "oracle p95 + 5 ms") are set for the host, so under
# emulation they fail, and so does this script's status.
set -eu
set -o pipefail
. /vm/config
cd /tmp
# Through a pipe, the progress bar (stderr) sees no terminal and stays quiet.
# shellcheck disable=SC2086 # GUEST_ARGS is a list of words
siprace bench --sctp --scenarios /vm/bench-scenarios --lab vm --out /tmp/results \
    ${GUEST_ARGS:---quick --only healthy,ipv6-blackholed} 2>&1 | cat
