#!/usr/bin/env bash
# Runs siprace's SCTP suite inside a small qemu VM whose kernel has SCTP.
#
# The host kernel has no SCTP, so the SCTP code never runs on it. This boots
# Debian's own kernel (fetched with apt-get download and unpacked into a cache,
# never installed on the host) with an initramfs made here from busybox, the
# current siprace binary and the guest test binary (tests/sctp_vm.rs), runs a
# guest script, streams the serial console and exits with the guest's status.
# See netns-scripts/README.md, "SCTP in a VM".
#
# Exit status: the guest script's status (0 = every guest test passed);
# 124 the VM did not finish within --timeout (it is killed); 3 the VM ended
# without reporting a status (kernel panic, init died); 77 the VM cannot run
# here (no qemu, no apt, kernel not fetchable: the reason is printed); 2 usage.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
guest_dir="$here/sctp-vm"

usage() {
    cat <<'EOF'
usage: netns-scripts/sctp-vm.sh [options]
  --siprace BIN      siprace binary to put in the guest (default: $SIPRACE_BIN,
                     else target/release/siprace, else target/debug/siprace)
  --guest-tests BIN  guest test binary (default: built by
                     `cargo test --test sctp_vm --no-run`)
  --filter TEXT      run only the guest tests whose name contains TEXT
  --script FILE      guest script to run instead of netns-scripts/sctp-vm/guest.sh
                     (e.g. netns-scripts/sctp-vm/bench.sh: siprace bench --sctp)
  --guest-args TEXT  words for the guest script (GUEST_ARGS), e.g. bench.sh's
                     siprace bench arguments
  --timeout SECS     bound on the whole VM run, boot to power-off (default 600)
  --memory MB        guest memory (default 768)
  --cache DIR        download cache (default: $SIPRACE_VM_CACHE, else
                     ${XDG_CACHE_HOME:-/var/cache}/siprace-vm; ~/.cache
                     instead of /var/cache where that is not writable)
  --console-log FILE also write the guest console to FILE
  --fetch-only       fetch and cache the kernel and busybox, then stop
EOF
}

siprace_bin=${SIPRACE_BIN:-}
guest_tests=
filter=
guest_script="$guest_dir/guest.sh"
timeout_secs=600
memory_mb=768
default_cache_root=/var/cache
[ -w "$default_cache_root" ] || default_cache_root=${HOME:-/tmp}/.cache
cache=${SIPRACE_VM_CACHE:-${XDG_CACHE_HOME:-$default_cache_root}/siprace-vm}
fetch_only=
console_log=
guest_args=
while [ $# -gt 0 ]; do
    case "$1" in
        --siprace|--guest-tests|--filter|--script|--timeout|--memory|--cache|--console-log|--guest-args)
            [ $# -ge 2 ] || { echo "sctp-vm: $1 needs a value" >&2; usage >&2; exit 2; } ;;
    esac
    case "$1" in
        --siprace) siprace_bin=$2; shift 2 ;;
        --guest-tests) guest_tests=$2; shift 2 ;;
        --filter) filter=$2; shift 2 ;;
        --script) guest_script=$2; shift 2 ;;
        --timeout) timeout_secs=$2; shift 2 ;;
        --memory) memory_mb=$2; shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        --console-log) console_log=$2; shift 2 ;;
        --guest-args) guest_args=$2; shift 2 ;;
        --fetch-only) fetch_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "sctp-vm: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$timeout_secs$memory_mb" in
    ''|*[!0-9]*) echo "sctp-vm: --timeout and --memory take whole numbers" >&2; exit 2 ;;
esac
if [ "$timeout_secs" -lt 10 ] || [ "$memory_mb" -lt 256 ]; then
    echo "sctp-vm: --timeout is at least 10 (s), --memory at least 256 (MB)" >&2
    exit 2
fi
case "$filter" in
    *[!A-Za-z0-9_]*) echo "sctp-vm: --filter takes a test name part ([A-Za-z0-9_])" >&2; exit 2 ;;
esac
case "$guest_args" in
    *[!A-Za-z0-9_,.=:/\ -]*) echo "sctp-vm: --guest-args takes words of [A-Za-z0-9_,.=:/-]" >&2; exit 2 ;;
esac

# The modules the guest loads, in this order; their dependencies (from
# modules.dep) are loaded first. crc32c_generic comes first because sctp's
# libcrc32c asks the crypto API for "crc32c", which the guest could only
# load on demand with a modprobe and an alias table. dummy: a black hole for
# IPv6; veth, tun, nf_tables and nft_reject_inet: the namespace lab.
guest_modules=(crc32c_generic sctp dummy veth tun nf_tables nft_reject_inet)

# The host's tools the lab runs (src/lab/sys.rs): they replace busybox's
# applets of the same name in the guest. Without them the lab guest test
# says it did not run.
lab_tools=(ip nft sysctl)

started=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - started) / 1000000 )) ms"; }
say() { echo "sctp-vm: $*" >&2; }
cannot_run() { say "CANNOT RUN: $*"; exit 77; }

export PATH="$PATH:/usr/sbin:/sbin"
for tool in apt-get apt-cache dpkg-deb gzip flock; do
    command -v "$tool" >/dev/null 2>&1 || cannot_run "$tool not found (a Debian host with apt is needed to fetch the guest kernel)"
done
if [ -z "$fetch_only" ] && ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    cannot_run "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
fi
[ "$(uname -m)" = x86_64 ] || cannot_run "the guest kernel is Debian's amd64 one; this host is $(uname -m)"

tmp=
vm_pid=
cleanup() {
    # The VM first (by its PID: `timeout` passes the signal on to qemu), then the files.
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
        kill -TERM "$vm_pid" 2>/dev/null || true
        wait "$vm_pid" 2>/dev/null || true
    fi
    if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
tmp=$(mktemp -d "${TMPDIR:-/tmp}/siprace-vm.XXXXXX")

# --- Fetch (cached) -----------------------------------------------------------

# "PACKAGE VERSION" for each package apt has a candidate of (one apt-cache
# call: each takes a second or two on a loaded machine).
candidates() {
    apt-cache policy "$@" 2>/dev/null | awk '
        /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
        $1 == "Candidate:" && $2 != "(none)" { print pkg, $2 }'
}

# The kernel package linux-image-amd64 depends on (linux-image-6.1.0-NN-amd64).
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Downloads package $1 at version $2 into $3 (apt-get download writes to the
# working directory). Unsandboxed: the _apt user may not write to the cache.
download() {
    (cd "$3" && apt-get download -q -o APT::Sandbox::User=root "$1=$2" >/dev/null) \
        || return 1
    ls "$3"/"$1"_*.deb >/dev/null 2>&1
}

# Fills $cache/kernel-$ver/ (vmlinux, modules.dep, the modules) and
# $cache/busybox-$ver/busybox. Holds a lock: two runs may share one cache.
fetch() {
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock -w 600 9 || cannot_run "cache $cache stayed locked for 10 minutes"

    local kpkg kver= bver= versions
    kpkg=$(kernel_package)
    versions=$(candidates ${kpkg:+"$kpkg"} busybox-static)
    if [ -z "$kpkg" ] || [ "$(wc -l <<<"$versions")" != 2 ]; then
        say "apt knows no kernel or busybox package yet: apt-get update"
        apt-get update -qq >/dev/null 2>&1 || true
        kpkg=$(kernel_package)
        versions=$(candidates ${kpkg:+"$kpkg"} busybox-static)
    fi
    if [ -n "$kpkg" ]; then
        kver=$(awk -v p="$kpkg" '$1 == p { print $2 }' <<<"$versions")
        bver=$(awk '$1 == "busybox-static" { print $2 }' <<<"$versions")
    fi
    if [ -z "$kver" ] || [ -z "$bver" ]; then
        # Offline with a warm cache: use what is there.
        kernel_dir=$(ls -d "$cache"/kernel-* 2>/dev/null | tail -1 || true)
        busybox=$(ls "$cache"/busybox-*/busybox 2>/dev/null | tail -1 || true)
        [ -n "$kernel_dir" ] && [ -n "$busybox" ] \
            || cannot_run "apt has no linux-image-amd64 (apt-get update failed?) and the cache $cache is empty"
        say "apt has no linux-image-amd64; using the cached $(basename "$kernel_dir")"
    else
        kernel_dir="$cache/kernel-$kpkg-$kver"
        busybox="$cache/busybox-$bver/busybox"
        if [ ! -x "$busybox" ]; then
            say "fetching busybox-static $bver"
            local d="$tmp/busybox-deb"
            mkdir -p "$d"
            download busybox-static "$bver" "$d" || cannot_run "apt-get download busybox-static=$bver failed"
            dpkg-deb -x "$d"/busybox-static_*.deb "$d/x"
            mkdir -p "$(dirname "$busybox")"
            cp "$d/x/bin/busybox" "$busybox.part" && mv "$busybox.part" "$busybox"
            rm -rf "$d"
        fi
        if [ ! -s "$kernel_dir/vmlinux" ] && [ ! -s "$kernel_dir/vmlinuz" ]; then
            fetch_kernel "$kpkg" "$kver"
        fi
        # Only the current versions stay cached.
        for old in "$cache"/kernel-* "$cache"/busybox-*; do
            case "$old" in "$kernel_dir"|"$(dirname "$busybox")") ;; *) rm -rf "$old" ;; esac
        done
    fi
    flock -u 9
    exec 9>&-
}

# Unpacks the kernel package in a temporary directory and keeps, in
# $kernel_dir: the uncompressed vmlinux (booted through its PVH entry, about
# twice as fast as the bzImage under emulation), modules.dep and the modules
# of net/, crypto/, lib/ and drivers/net/ (what the guest can need).
fetch_kernel() {
    local pkg=$1 ver=$2 d="$tmp/kernel-deb"
    say "fetching $pkg $ver"
    mkdir -p "$d"
    download "$pkg" "$ver" "$d" || cannot_run "apt-get download $pkg=$ver failed"
    dpkg-deb -x "$d"/"$pkg"_*.deb "$d/x"
    local mods part="$kernel_dir.part"
    mods=$(ls -d "$d"/x/lib/modules/*/ | head -1)
    rm -rf "$part"
    mkdir -p "$part/modules"
    cp "$d"/x/boot/vmlinuz-* "$part/vmlinuz"
    (cd "$mods" && find kernel/net kernel/crypto kernel/lib kernel/drivers/net -name '*.ko' -print0 \
        | xargs -0 cp --parents -t "$part/modules/")
    # modules.dep is made by depmod at install time, so it is not in the package.
    # (busybox depmod takes the version only in its X.Y.Z-... form.)
    local kernel_version
    kernel_version=$(basename "$mods")
    mkdir -p "$d/dep/lib/modules"
    mv "$part/modules" "$d/dep/lib/modules/$kernel_version"
    "$busybox" depmod -b "$d/dep" "$kernel_version"
    mv "$d/dep/lib/modules/$kernel_version" "$part/modules"
    if extract_vmlinux "$part/vmlinuz" "$part/vmlinux"; then
        rm "$part/vmlinuz"
    else
        rm -f "$part/vmlinux"
        say "could not extract vmlinux (is xz installed?); booting the compressed image (slower)"
    fi
    rm -rf "$kernel_dir" "$d"
    mv "$part" "$kernel_dir"
}

# The bzImage is xz-compressed: its payload starts at the xz magic. Writes
# the ELF image to $2; fails if it cannot.
extract_vmlinux() {
    command -v xz >/dev/null 2>&1 || return 1
    local off
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -1 | cut -d: -f1)
    [ -n "$off" ] || return 1
    # xz stops reading at the end of the stream: tail's SIGPIPE is expected.
    { tail -c +"$((off + 1))" "$1" 2>/dev/null || true; } | xz -dcq --single-stream >"$2" 2>/dev/null || return 1
    [ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ]
}

fetch
say "kernel $(basename "$kernel_dir"), busybox $(basename "$(dirname "$busybox")") ($(elapsed))"
[ -z "$fetch_only" ] || exit 0

# --- Build the initramfs ------------------------------------------------------

if [ -z "$siprace_bin" ]; then
    for b in "$root/target/release/siprace" "$root/target/debug/siprace"; do
        if [ -x "$b" ]; then siprace_bin=$b; break; fi
    done
fi
[ -n "$siprace_bin" ] && [ -x "$siprace_bin" ] \
    || { say "no siprace binary (cargo build --release, or --siprace BIN)"; exit 2; }
if [ -n "$(find "$root/src" -newer "$siprace_bin" -name '*.rs' 2>/dev/null | head -1)" ]; then
    say "WARNING: $siprace_bin is older than the sources (cargo build --release?)"
fi
if [ -z "$guest_tests" ] && [ "$guest_script" = "$guest_dir/guest.sh" ]; then
    say "building the guest tests (cargo test --test sctp_vm --no-run)"
    guest_tests=$(cd "$root" && cargo test --quiet --test sctp_vm --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
    [ -n "$guest_tests" ] || { say "could not build tests/sctp_vm.rs"; exit 2; }
fi

stage="$tmp/root"
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,run,etc,var,vm/modules}
ln -s /run "$stage/var/run" # iproute2 keeps network namespaces in /var/run/netns
: >"$stage/etc/resolv.conf" # a mount point for `ip netns exec` (/etc/netns/NS/resolv.conf)

# Copies an executable and the shared libraries it loads (ldd's list,
# loader included) to the same paths in the guest, stripped.
install_exe() {
    local src=$1 dst=$2
    cp "$src" "$stage$dst"
    chmod 755 "$stage$dst"
    if command -v strip >/dev/null 2>&1; then strip "$stage$dst" 2>/dev/null || true; fi
    local lib
    for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
        if [ ! -e "$stage$lib" ]; then
            mkdir -p "$stage$(dirname "$lib")"
            cp -L "$lib" "$stage$lib"
        fi
    done
}

cp "$busybox" "$stage/bin/busybox"
host_tools=()
for tool in "${lab_tools[@]}"; do
    if path=$(command -v "$tool"); then
        install_exe "$path" "/bin/$tool"
        host_tools+=("$tool")
    fi
done
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || [ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
done
install_exe "$siprace_bin" /bin/siprace
if [ -n "$guest_tests" ]; then install_exe "$guest_tests" /vm/guest-tests; fi
cp "$guest_dir/init" "$stage/init"
cp "$guest_script" "$stage/vm/guest.sh"
chmod 755 "$stage/init" "$stage/vm/guest.sh"
{
    printf 'GUEST_FILTER=%s\n' "$filter"
    printf "GUEST_ARGS='%s'\n" "$guest_args"
} >"$stage/vm/config"
# The benchmark's scenarios, for bench.sh.
cp -r "$root/bench-scenarios" "$stage/vm/bench-scenarios"

# Modules: depth-first over modules.dep so that each comes after its dependencies.
declare -A dep_of=() loaded=()
while IFS= read -r line; do
    dep_of["${line%%:*}"]=${line#*:}
done <"$kernel_dir/modules/modules.dep"
module_path() {
    local want=$1 p n
    for p in "${!dep_of[@]}"; do
        n=${p##*/}; n=${n%.ko}
        if [ "${n//-/_}" = "${want//-/_}" ]; then echo "$p"; return; fi
    done
}
order=()
add_module() {
    local p=$1 d
    [ -z "${loaded[$p]:-}" ] || return 0
    loaded[$p]=1
    for d in ${dep_of[$p]}; do add_module "$d"; done
    order+=("$p")
}
for m in "${guest_modules[@]}"; do
    p=$(module_path "$m")
    [ -n "$p" ] || { say "module $m is not in $(basename "$kernel_dir")"; exit 3; }
    add_module "$p"
done
for p in "${order[@]}"; do
    cp "$kernel_dir/modules/$p" "$stage/vm/modules/"
    basename "$p" >>"$stage/vm/modules/order"
done

initramfs="$tmp/initramfs.gz"
(cd "$stage" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$initramfs")
say "initramfs $(( $(stat -c %s "$initramfs") / 1024 )) KiB: $(basename "$siprace_bin")${guest_tests:+, $(basename "$guest_tests")}, host tools: ${host_tools[*]:-none}, modules ${order[*]##*/} ($(elapsed))"

# --- Boot ---------------------------------------------------------------------

kernel="$kernel_dir/vmlinux"
[ -s "$kernel" ] || kernel="$kernel_dir/vmlinuz"
console="$tmp/console.log"
# Software emulation (TCG): /dev/kvm, where it exists, may not be real
# hardware virtualisation (nested setups die with "KVM internal error").
: >"$console"
timeout --kill-after=5 "$timeout_secs" \
    qemu-system-x86_64 -accel tcg -cpu max -m "$memory_mb" -smp 1 \
        -display none -monitor none -serial stdio -no-reboot -nic none \
        -kernel "$kernel" -initrd "$initramfs" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
        </dev/null >"$console" 2>&1 &
vm_pid=$!
boot_started=$(date +%s%N)
# Stream the console while the VM runs (tail stops when the VM's process is
# gone). In the background: a signal's trap runs during `wait`, but would
# wait for a foreground pipeline, which here waits for the VM.
tail -n +1 -s 0.2 -f --pid="$vm_pid" "$console" | tr -d '\r' &
stream_pid=$!
vm_status=0
wait "$vm_pid" || vm_status=$?
vm_pid=
wait "$stream_pid" || true
vm_ms=$(( ($(date +%s%N) - boot_started) / 1000000 ))
if [ -n "$console_log" ]; then tr -d '\r' <"$console" >"$console_log"; fi

guest_status=$(tr -d '\r' <"$console" | sed -n 's/^SIPRACE-VM-EXIT=\([0-9][0-9]*\)$/\1/p' | tail -1)
if [ -n "$guest_status" ]; then
    say "guest exit status $guest_status; VM ran $vm_ms ms, $(elapsed) in all"
    exit "$guest_status"
elif [ "$vm_status" = 124 ] || [ "$vm_status" = 137 ]; then
    say "TIMEOUT: the VM did not finish within ${timeout_secs}s and was killed ($(elapsed))"
    exit 124
else
    say "the VM ended (qemu status $vm_status) without reporting a guest status ($(elapsed))"
    exit 3
fi
