#!/usr/bin/env bash
# Shared set-up of run-fuzz.sh and run-sanitizers.sh: the Debian 12 packages of tools/setup.sh
# plus clang-19 and its runtimes (libFuzzer, ASan, UBSan), installed with apt-get when missing,
# and one clang build in build-fuzz/ with ASan + UBSan everywhere (IMG_SANITIZE) and the fuzz
# targets (IMG_BUILD_FUZZ). One build serves both scripts: the libraries carry libFuzzer's
# coverage instrumentation, which the unit tests do not notice (the ASan runtime provides its
# hooks), so CI compiles the sources once for both instead of twice.
# Source it. Environment:
#   FUZZ_BUILD_DIR  build folder (default: build-fuzz)
#   JOBS            build jobs (default: nproc)
#   IMG_APT=0       never run apt-get; IMG_APT=1 always run it
#   SAN_OPT_FLAGS   optimization and debug flags (default: -O1 -gline-tables-only)
#   CLANG_SETUP_CONFIGURE=0  install only (tools/run-tsan.sh configures a build of its own)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_BUILD_DIR="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
CLANG_PACKAGES=(clang-19 libclang-rt-19-dev zlib1g-dev libzstd-dev liburing-dev
                libcli11-dev googletest librapidcheck-dev qemu-utils ninja-build cmake g++
                pkg-config python3)

clang_install() {
  local missing=()
  for p in "${CLANG_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ "${IMG_APT:-}" == 0 || ( ${#missing[@]} -eq 0 && "${IMG_APT:-}" != 1 ) ]]; then
    return
  fi
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  echo "clang-setup: installing ${missing[*]:-${CLANG_PACKAGES[*]}}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${CLANG_PACKAGES[@]}" </dev/null
}

clang_configure() {
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  # Warnings are the gcc build's gate (IMG_WERROR there); clang's own differ and must not
  # stop the sanitizer run.
  # -O1 with line tables only, as the sanitizers' documentation advises: reports keep file:line
  # and the build costs ~20% less CPU than -O2 -g (measured on qcow2/driver.cc: 12.8 s vs 16.2 s).
  local opt="${SAN_OPT_FLAGS:--O1 -gline-tables-only}"
  cmake -S "$ROOT" -B "$FUZZ_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$opt -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$opt -DNDEBUG" \
    -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 -DIMG_WERROR=OFF \
    -DIMG_SANITIZE=ON -DIMG_BUILD_FUZZ=ON "${launcher[@]}" >/dev/null
}

# A finding must stop the process that hit it, with a stack, whatever the caller's environment.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# ASan does not find Debian's llvm-symbolizer by itself; without it a report has no file:line.
for s in /usr/lib/llvm-19/bin/llvm-symbolizer "$(command -v llvm-symbolizer || true)"; do
  if [[ -x "$s" && -z "${ASAN_SYMBOLIZER_PATH:-}" ]]; then export ASAN_SYMBOLIZER_PATH="$s"; fi
done

clang_install
if [[ "${CLANG_SETUP_CONFIGURE:-1}" != 0 ]]; then clang_configure; fi
