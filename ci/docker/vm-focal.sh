#!/usr/bin/env bash
# Boot a real Ubuntu 20.04 cloud image (kernel 5.4) under qemu, share the source tree with
# it over 9p, install the dependencies and run ./ci/test inside. Writes vm-test.log and exits
# with ci/test's status. Needs qemu-system-x86, cloud-image-utils; KVM when available.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${ABD_VM_WORK:-$(mktemp -d)}
img=$work/focal.img
[ -f "$work/focal-base.img" ] || curl -fsSL -o "$work/focal-base.img" \
	https://cloud-images.ubuntu.com/focal/current/focal-server-cloudimg-amd64.img
qemu-img create -f qcow2 -F qcow2 -b "$work/focal-base.img" "$img" 20G >/dev/null
cat >"$work/user-data" <<'CLOUD'
#cloud-config
runcmd:
  - [sh, -c, "mkdir -p /src && mount -t 9p -o trans=virtio,version=9p2000.L src /src"]
  - [sh, -c, "uname -r > /src/vm-kernel.txt"]
  - [sh, -c, "cd /src && ./ci/docker/focal-deps.sh > /src/vm-deps.log 2>&1; rm -rf build-vm; ABD_BUILD=build-vm ./ci/test > /src/vm-test.log 2>&1; echo $? > /src/vm-rc"]
  - [poweroff]
CLOUD
echo "instance-id: abd-ci" >"$work/meta-data"
cloud-localds "$work/seed.img" "$work/user-data" "$work/meta-data"
accel=tcg
[ -w /dev/kvm ] && accel=kvm
rm -f "$src/vm-rc"
timeout 80m qemu-system-x86_64 -machine accel=$accel -m 4096 -smp 2 -nographic \
	-drive file="$img",if=virtio -drive file="$work/seed.img",if=virtio,format=raw \
	-virtfs local,path="$src",mount_tag=src,security_model=none,id=src \
	-nic user,model=virtio-net-pci >"$work/console.log" 2>&1 || true
echo "guest kernel: $(cat "$src/vm-kernel.txt" 2>/dev/null || echo unknown)"
tail -40 "$src/vm-test.log" 2>/dev/null || tail -60 "$work/console.log"
exit "$(cat "$src/vm-rc" 2>/dev/null || echo 1)"
