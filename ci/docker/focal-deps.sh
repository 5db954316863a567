#!/usr/bin/env bash
# Ubuntu 20.04 (focal) lacks liburing and Criterion packages and ships meson 0.53: install
# the build dependencies from release sources, pip and LLVM's apt repository. Used by
# ubuntu-20.04.Dockerfile and by the qemu job that boots a real 5.4 kernel.
set -euxo pipefail
LIBURING_VERSION=${LIBURING_VERSION:-2.5}
CRITERION_VERSION=${CRITERION_VERSION:-2.4.2}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	ca-certificates curl gnupg sudo git python3 python3-pip ninja-build pkg-config make xz-utils \
	gcc g++ cmake libcap-dev libseccomp-dev libffi-dev libgit2-dev util-linux
pip3 install --no-cache-dir 'meson>=1.0,<1.5'
curl -fsSL https://apt.llvm.org/llvm-snapshot.gpg.key | gpg --dearmor --yes -o /usr/share/keyrings/llvm.gpg
echo "deb [signed-by=/usr/share/keyrings/llvm.gpg] http://apt.llvm.org/focal/ llvm-toolchain-focal-22 main" \
	>/etc/apt/sources.list.d/llvm-22.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends clang-22 libclang-rt-22-dev lld-22
tmp=$(mktemp -d)
curl -fsSL "https://github.com/axboe/liburing/archive/refs/tags/liburing-$LIBURING_VERSION.tar.gz" | tar xz -C "$tmp"
(cd "$tmp/liburing-liburing-$LIBURING_VERSION" && ./configure --prefix=/usr && make -j"$(nproc)" -C src && make install)
curl -fsSL "https://github.com/Snaipe/Criterion/releases/download/v$CRITERION_VERSION/criterion-$CRITERION_VERSION.tar.xz" | tar xJ -C "$tmp"
(cd "$tmp/criterion-$CRITERION_VERSION" && meson setup build --prefix=/usr -Dtests=false && ninja -C build install)
ldconfig
rm -rf "$tmp"
