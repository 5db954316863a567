# Ubuntu 24.04 (kernel of the host; liburing 2.5 and Criterion 2.4.1 from the archive,
# clang-22 from LLVM's apt repository through ci/bootstrap).
FROM ubuntu:24.04
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        ca-certificates curl gnupg sudo git python3 && rm -rf /var/lib/apt/lists/*
COPY ci/bootstrap /tmp/bootstrap
RUN ABD_BOOTSTRAP_PEERS=1 /tmp/bootstrap
WORKDIR /src
