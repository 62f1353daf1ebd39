#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one
# after the other, and prints per target the executions, the coverage and the
# crashes. Exits non-zero if any target crashed (or hung, or ran out of
# memory); the input is kept under fuzz/artifacts/TARGET/ — copy it to
# fuzz/regressions/TARGET/ once understood, so tests/fuzz_regressions.rs
# replays it under the stable `cargo test`.
#
#   scripts/fuzz.sh [SECONDS]      e.g. scripts/fuzz.sh 600 (exploring: a new random seed each run)
#   scripts/fuzz.sh --runs N       N executions per target from seed 1 (CI: the
#                                  same inputs every run, so a red CI is
#                                  reproducible and never a lucky draw)
#   FUZZ_TARGETS="sip_request target_parse" scripts/fuzz.sh 60   (a subset)
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags); installs
# cargo-fuzz from crates.io if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/fuzz.sh [SECONDS] | --runs N (positive whole numbers)"
runs=
if [ "${1:-}" = --runs ]; then
  runs="${2:-}"
  case "$runs" in '' | *[!0-9]* | 0) echo "$usage" >&2; exit 2 ;; esac
  # A bound on time too, so a slow machine cannot stall CI; reaching it is
  # not a failure (the summary shows how many executions ran).
  seconds=300
  budget=(-seed=1 -runs="$runs" -max_total_time="$seconds")
  label="$runs runs from seed 1 per target"
else
  seconds="${1:-60}"
  case "$seconds" in '' | *[!0-9]* | 0) echo "$usage" >&2; exit 2 ;; esac
  budget=(-max_total_time="$seconds")
  label="${seconds}s per target"
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly Rust toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# -a: debug assertions and overflow checks on, as under `cargo test`, so an
# arithmetic overflow is a finding and not a silent wrap.
fuzz_flags=(--debug-assertions)
echo "== building the fuzz targets"
cargo +nightly fuzz build "${fuzz_flags[@]}"

# Extra read-only seeds for the SIP targets: the RFC 4475 / RFC 5118 torture
# messages, from the repository if it has them, else from the shared copy.
sip_corpora=
for dir in tests/corpora /work/shared/corpora; do
  if [ -d "$dir" ]; then sip_corpora="$dir"; break; fi
done

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
marks="$(mktemp -d "${TMPDIR:-/tmp}/siprace-fuzz.XXXXXX")"
trap 'rm -rf "$marks"' EXIT

failed=0
rows=()
for target in $targets; do
  corpus="fuzz/corpus/$target"           # libFuzzer's working corpus (git-ignored)
  artifacts="fuzz/artifacts/$target"     # where cargo fuzz has libFuzzer keep a crash
  mkdir -p "$corpus" "$artifacts"
  inputs=("$corpus")
  for dir in "fuzz/seeds/$target" "fuzz/regressions/$target"; do
    [ -d "$dir" ] && inputs+=("$dir")
  done
  case "$target" in
    sip_*) [ -n "$sip_corpora" ] && inputs+=("$sip_corpora") ;;
  esac
  log="fuzz/artifacts/$target.log"       # the whole libFuzzer output of the last run
  start_mark="$marks/$target.start"
  touch "$start_mark"
  echo "== $target: $label (inputs: ${inputs[*]})"
  # libFuzzer stops by itself after -runs / max_total_time; the outer timeout
  # only guards against a wedged process. -timeout: one input taking longer
  # is a hang.
  status=0
  timeout --kill-after=30 "$((seconds + 300))" \
    cargo +nightly fuzz run "${fuzz_flags[@]}" "$target" "${inputs[@]}" -- \
      "${budget[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  new_artifacts="$(find "$artifacts" -type f -newer "$start_mark")"
  crashes="$(printf '%s' "$new_artifacts" | grep -c . || true)"
  # Executions: libFuzzer's final statistics, else the last "#N" status line.
  execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)"
  [ -n "$execs" ] || execs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)"
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    [ "$crashes" -gt 0 ] || crashes="? (exit $status)"
    echo "!! $target failed (whole log: $log):"
    grep -m1 -A4 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | sed 's/^/   /' || true
    grep -A2 -E '^Failing input:' "$log" | sed 's/^/   /' || true
    [ -z "$new_artifacts" ] || printf '%s\n' "$new_artifacts" | sed 's/^/   kept: /'
  fi
  rows+=("$(printf '%-16s %12s %8s %8s' "$target" "${execs:-?}" "${cov:-?}" "$crashes")")
done

echo
echo "== fuzzing summary ($label)"
printf '%-16s %12s %8s %8s\n' target executions cov crashes
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: crashes found; inputs are under fuzz/artifacts/ (see above)" >&2
  exit 1
fi
