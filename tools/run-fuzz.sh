#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-19, ASan + UBSan; tools/clang-setup.sh) and runs each
# on its seed corpus (testdata/fuzz/<target>) with its dictionary. docs/fuzzing.md explains.
#   tools/run-fuzz.sh --ci [TARGET...]                 FUZZ_SECONDS (default 60) each; the corpus
#                                                      in testdata/ is read, never written
#   tools/run-fuzz.sh --campaign SECONDS [TARGET...]   SECONDS each; new inputs are added to
#                                                      testdata/fuzz/<target> (minimize before
#                                                      committing: docs/fuzzing.md)
# Exits non-zero if any target crashes, leaks, times out (10 s an input) or runs out of memory
# (2 GiB); the input is kept as build-fuzz/findings/<target>/<kind>-<hash>, to be fixed and then
# added to testdata/fuzz/regressions/<target>/, which the normal suite replays (tests/fuzz).
# Environment: FUZZ_PARALLEL targets at once (default: nproc; each is one process), JOBS, IMG_APT.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

mode="" seconds="${FUZZ_SECONDS:-60}"
case "${1:-}" in
  --ci) mode=ci; shift ;;
  --campaign) mode=campaign; seconds="${2:?--campaign needs SECONDS}"; shift 2 ;;
  *) echo "usage: tools/run-fuzz.sh --ci | --campaign SECONDS [TARGET...]" >&2; exit 2 ;;
esac

. tools/clang-setup.sh
all=()
for f in fuzz/*_fuzz.cc; do all+=("$(basename "$f" .cc)"); done
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
ninja -C "$FUZZ_BUILD_DIR" -j "$JOBS" "${targets[@]}"

out="$FUZZ_BUILD_DIR/fuzz-runs"
rm -rf "$out"
mkdir -p "$out" "$FUZZ_BUILD_DIR/findings"

dict_of() {
  case "$1" in
    qcow2_chain) echo testdata/fuzz/qcow2_chain.dict ;;
    qcow2_*) echo testdata/fuzz/qcow2.dict ;;
    *) echo "testdata/fuzz/$1.dict" ;;
  esac
}

run_one() {  # run_one TARGET: one libFuzzer process, its log in $out/TARGET.log
  local t="$1" c="${1%_fuzz}"
  local seeds="testdata/fuzz/$c" dict findings="$FUZZ_BUILD_DIR/findings/$c"
  dict="$(dict_of "$c")"
  mkdir -p "$findings" "$seeds"
  local corpus=("$seeds")
  if [[ $mode == ci ]]; then
    # New inputs go to a scratch folder (libFuzzer writes into the first one it is given).
    mkdir -p "$out/$c.corpus"
    corpus=("$out/$c.corpus" "$seeds")
  fi
  [[ -d testdata/fuzz/regressions/$c ]] && corpus+=("testdata/fuzz/regressions/$c")
  local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048
              -print_final_stats=1 -artifact_prefix="$findings/")
  [[ -f $dict ]] && args+=(-dict="$dict")
  local rc=0
  "$FUZZ_BUILD_DIR/fuzz/$t" "${args[@]}" "${corpus[@]}" >"$out/$c.log" 2>&1 || rc=$?
  echo "$rc" >"$out/$c.rc"
}

echo "run-fuzz: ${targets[*]}: ${seconds}s each, ${FUZZ_PARALLEL:-$(nproc)} at a time"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if ((running >= ${FUZZ_PARALLEL:-$(nproc)})); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

fail=0
printf '%-22s %12s %8s %8s %8s %s\n' target execs exec/s cov ft result >"$out/summary.txt"
for t in "${targets[@]}"; do
  c="${t%_fuzz}" log="$out/${t%_fuzz}.log"
  rc="$(cat "$out/$c.rc" 2>/dev/null || echo 99)"
  # A target that stopped on its first input has no cov/ft lines: "|| true", or pipefail ends
  # the script here, before the summary and the report.
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)"
  cov="$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)"
  ft="$({ grep -o 'ft: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)"
  result=ok
  if [[ $rc != 0 ]]; then
    result="FAILED (rc $rc): $(grep -m1 -E 'ERROR: |runtime error|deadly signal|Test unit written' "$log" || true)"
    fail=1
  fi
  printf '%-22s %12s %8s %8s %8s %s\n' "$c" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" \
    "$result" >>"$out/summary.txt"
done
cat "$out/summary.txt"
if ((fail)); then
  echo "run-fuzz: findings above; inputs in $FUZZ_BUILD_DIR/findings, logs in $out" >&2
  for f in "$out"/*.log; do
    if grep -q -E 'ERROR: |runtime error|deadly signal' "$f"; then
      echo "==== $f" >&2
      grep -A40 -m1 -E 'ERROR: |runtime error|deadly signal' "$f" >&2 || true
    fi
  done
  exit 1
fi
echo "run-fuzz: no findings"
