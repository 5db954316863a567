# Ubuntu 20.04: glibc 2.31; liburing, Criterion, meson and clang-22 come from
# focal-deps.sh. The container still runs the host's kernel: the 5.4 kernel itself is met
# in the qemu job of .github/workflows/ci.yml.
FROM ubuntu:20.04
COPY ci/docker/focal-deps.sh /tmp/focal-deps.sh
RUN /tmp/focal-deps.sh && rm -rf /var/lib/apt/lists/*
WORKDIR /src
