#!/usr/bin/env bash
# Shared set-up for run-main.sh and run-tests.sh: installs the Debian 12 packages the build and
# the tests need, then configures and builds everything with CMake + Ninja in build/.
# Source it (". tools/setup.sh") or run it. Environment:
#   BUILD_DIR   build folder (default: build)
#   IMG_APT=0   skip apt-get even if packages are missing; IMG_APT=1 always run it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
PACKAGES=(zlib1g-dev libzstd-dev liburing-dev libcli11-dev googletest librapidcheck-dev
          qemu-utils ninja-build cmake g++ pkg-config fio clang-19 libclang-rt-19-dev lz4 python3
          e2fsprogs cpio nlohmann-json3-dev libseccomp-dev libnbd-dev libnbd-bin nbdkit
          iproute2)
# e2fsprogs: the Linux test guest's ext4 disk.
# nlohmann-json3-dev: vmm's control-socket JSON (header-only, the most used C++ JSON library);
# libseccomp-dev: vmm's per-thread syscall filters; libnbd-dev/libnbd-bin/nbdkit: the nbd://
# client (libnbd, from the NBD maintainers) and the real NBD peers the img-nbd tests run against;
# iproute2: `ip` joins the storage and VM network namespaces of the NBD end-to-end tests. The test kernel's
# own build packages are installed by testdata/linux-guest/build-kernel.sh.

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ "${IMG_APT:-}" == 0 || ( ${#missing[@]} -eq 0 && "${IMG_APT:-}" != 1 ) ]]; then
    echo "setup: Debian packages already present"
    return
  fi
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]:-${PACKAGES[*]}}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${PACKAGES[@]}" </dev/null
}

build_all() {
  local jobs
  jobs="$(nproc 2>/dev/null || echo 2)"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMG_WERROR=ON
  ninja -C "$BUILD_DIR" -j "$jobs"
}

install_packages
build_all
