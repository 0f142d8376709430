#!/bin/busybox sh
# /init of the test guest's initramfs (busybox): load the modules the matrix needs, mount the
# host's root file system read-only over 9p with tmpfs for what must be writable, mount the
# results share, run kernels/suite.sh chrooted into the host's tree, and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "xdplb-guest: kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime)s"

off() {
  sync
  echo "xdplb-guest: power off after $(cut -d' ' -f1 /proc/uptime)s"
  reboot -f
}

while read -r m; do
  insmod "/modules/$m" || echo "xdplb-guest: insmod $m failed"
done </modules/order

R=/newroot/run/xdplb-results
mkdir -p /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /newroot; then
  echo "xdplb-guest: cannot mount the host's root over 9p"
  off
fi
for d in tmp run dev/shm; do
  mount -t tmpfs -o mode=1777 tmpfs "/newroot/$d" 2>/dev/null || mount -t tmpfs tmpfs "/newroot/$d"
done
chmod 0755 /newroot/run
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t bpf bpf /newroot/sys/fs/bpf
# The image's config where an installed kernel has it (libbpf reads it for .kconfig externs).
mount -t tmpfs tmpfs /newroot/boot
cp /config "/newroot/boot/config-$(uname -r)"
mkdir -p "$R"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "$R"; then
  echo "xdplb-guest: cannot mount the results share"
  off
fi
# The checkout and cargo's target directory, mounted back where the host has them: under /tmp
# or /run they would be hidden by the tmpfs above.
if [ -r "$R/shares" ]; then
  while read -r tag path; do
    mkdir -p "/newroot$path" 2>/dev/null
    if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 "$tag" "/newroot$path"; then
      echo "xdplb-guest: cannot mount the $tag share at $path"
      off
    fi
  done <"$R/shares"
fi
echo "xdplb-guest: root mounted after $(cut -d' ' -f1 /proc/uptime)s"
suite=$(cat "$R/suite-path")
chroot /newroot /bin/bash "$suite" /run/xdplb-results
echo "xdplb-guest: suite exited with $?"
umount "$R"
off
