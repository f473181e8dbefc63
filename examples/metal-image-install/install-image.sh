#!/bin/sh
# Installs an OS image published the metal-stack way -- an lz4-compressed
# rootfs tarball with an md5 file beside it, served over HTTP -- onto this
# machine's disk, then tells iguana to switch_root into it.
#
#   1. GPT on $DISK with one partition, "root" (the Discoverable Partitions
#      root type for x86-64); no ESP: iguana boots the machine every time.
#   2. ext4 on it, with a fresh UUID.
#   3. Download $IMAGE_URL and $IMAGE_MD5_URL onto the new filesystem (not
#      into RAM) and check the md5. A mismatch refuses: exit 1 with one
#      "md5 mismatch" line, no mountlist, so iguana does not hand over.
#   4. Unpack, write /etc/metal/install.yaml, run the image's /install.sh
#      in a chroot (with /dev, /proc and /sys), as metal-hammer does.
#   5. Write /iguana/mountlist: the root by UUID.
#
# Environment (set it in the workflow file, see README.md):
#   IMAGE_URL        required, e.g. http://images.example/debian/12/img.tar.lz4
#   IMAGE_MD5_URL    default $IMAGE_URL.md5 (md5sum output: "HASH  NAME")
#   DISK             default the first vd*, sd*, nvme*n* or xvd* disk
#   INSTALL_HOSTNAME default the current host name
#   CONSOLE          default ttyS0,115200n8 (install.yaml's console)
#   ROLE             default machine
#   SSH_PUBLIC_KEY   default empty
# Needs: busybox (sh, wget, md5sum, tar, mount, chroot, ...), lz4, sfdisk,
# mke2fs. Those three are called by path: a static busybox's sh runs its own
# applets before $PATH, and its mke2fs makes no ext4.
set -eu
set -o pipefail
LZ4=${LZ4:-/usr/bin/lz4}
SFDISK=${SFDISK:-/usr/sbin/sfdisk}
MKE2FS=${MKE2FS:-/usr/sbin/mke2fs}

TARGET=/target
ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709

say() { echo "metal-install: $*"; }
fail() { echo "metal-install: error: $*" >&2; exit 1; }
progress() {
  say "$*"
  if [ -p /iguana/progress ]; then echo "$*" > /iguana/progress; fi
}

cleanup() {
  for m in "$TARGET/sys" "$TARGET/proc" "$TARGET/dev" "$TARGET"; do
    if grep -q " $m " /proc/mounts; then umount -l "$m" || true; fi
  done
}
trap cleanup EXIT

first_disk() {
  for d in /sys/block/vd* /sys/block/sd* /sys/block/nvme*n* /sys/block/xvd*; do
    [ -e "$d" ] || continue
    [ "$(cat "$d/removable" 2>/dev/null || echo 0)" = 0 ] || continue
    echo "/dev/${d##*/}"
    return 0
  done
  return 1
}

# /dev/vda -> /dev/vda1, /dev/nvme0n1 -> /dev/nvme0n1p1
partition() {
  case "$1" in
    *[0-9]) echo "${1}p$2" ;;
    *) echo "$1$2" ;;
  esac
}

wait_for_block() {
  i=0
  while [ ! -b "$1" ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "partition $1 did not appear"
    usleep 100000
  done
}

# A one-line JSON document: install.yaml takes it as a YAML flow mapping.
one_line_json() { sed 's/^ *//' "$1" | tr -d '\n'; }

write_install_yaml() {
  machine_uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null || cat /iguana/machine-id)
  {
    echo "---"
    echo "hostname: \"$HOST\""
    echo "machineuuid: \"$machine_uuid\""
    echo "console: \"$CONSOLE\""
    echo "root_uuid: \"$ROOT_UUID\""
    echo "timestamp: \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
    echo "role: \"$ROLE\""
    echo "raidenabled: false"
    echo "sshpublickey: \"$SSH_PUBLIC_KEY\""
    echo "nics:"
    for n in /sys/class/net/*; do
      name=${n##*/}
      [ "$name" = lo ] && continue
      echo "  - name: \"$name\""
      echo "    mac: \"$(cat "$n/address")\""
    done
    # Not metal-hammer's: what iguana configured, as /iguana/network.json.
    if [ -f /iguana/network.json ]; then
      echo "network: $(one_line_json /iguana/network.json)"
    fi
    echo "disk: \"$DISK\""
  } > "$TARGET/etc/metal/install.yaml"
}

IMAGE_URL=${IMAGE_URL:-}
[ -n "$IMAGE_URL" ] || fail "IMAGE_URL is not set (the URL of the image's .tar.lz4)"
IMAGE_MD5_URL=${IMAGE_MD5_URL:-$IMAGE_URL.md5}
DISK=${DISK:-$(first_disk)} || fail "no disk found in /sys/block (set DISK)"
HOST=${INSTALL_HOSTNAME:-$(cat /proc/sys/kernel/hostname)}
CONSOLE=${CONSOLE:-ttyS0,115200n8}
ROLE=${ROLE:-machine}
SSH_PUBLIC_KEY=${SSH_PUBLIC_KEY:-}
case "$HOST" in
  *[!A-Za-z0-9.-]* | "") fail "host name \"$HOST\" is not a valid host name" ;;
esac
[ -b "$DISK" ] || fail "DISK $DISK is not a block device"
PART=$(partition "$DISK" 1)
ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)

progress "partitioning $DISK (GPT, one root partition)"
printf 'label: gpt\nname=root, type=%s\n' "$ROOT_TYPE" |
  "$SFDISK" --quiet --wipe always --wipe-partitions always "$DISK" ||
  fail "sfdisk $DISK failed"
wait_for_block "$PART"

progress "mkfs.ext4 $PART UUID=$ROOT_UUID"
"$MKE2FS" -q -F -t ext4 -L root -U "$ROOT_UUID" "$PART" || fail "mke2fs on $PART failed"
mkdir -p "$TARGET"
mount -t ext4 "$PART" "$TARGET" || fail "mount $PART on $TARGET failed"

progress "downloading $IMAGE_URL"
tarball="$TARGET/.metal-image.tar.lz4"
md5_file=$(wget -q -O- "$IMAGE_MD5_URL") || fail "download of $IMAGE_MD5_URL failed"
expected=$(echo "$md5_file" | awk 'NR == 1 {print tolower($1)}')
case "$expected" in
  ????????????????????????????????) ;;
  *) fail "$IMAGE_MD5_URL holds no md5 checksum: \"$(echo "$md5_file" | head -c 80)\"" ;;
esac
case "$expected" in *[!0-9a-f]*) fail "$IMAGE_MD5_URL holds no md5 checksum: \"$expected\"" ;; esac
wget -q -O "$tarball" "$IMAGE_URL" || fail "download of $IMAGE_URL failed"
actual=$(md5sum "$tarball" | awk '{print $1}')
if [ "$actual" != "$expected" ]; then
  rm -f "$tarball"
  fail "md5 mismatch for $IMAGE_URL: $IMAGE_MD5_URL says $expected, the download has $actual; refusing to install"
fi
progress "md5 ok ($actual)"

progress "unpacking into $PART"
"$LZ4" -dc "$tarball" | tar -xf - -C "$TARGET" || fail "unpacking $IMAGE_URL failed"
rm -f "$tarball"

mkdir -p "$TARGET/etc/metal" "$TARGET/dev" "$TARGET/proc" "$TARGET/sys"
write_install_yaml
[ -x "$TARGET/install.sh" ] || fail "the image has no executable /install.sh"
progress "running the image's /install.sh"
mount --bind /dev "$TARGET/dev"
mount -t proc proc "$TARGET/proc"
mount -t sysfs sysfs "$TARGET/sys"
chroot "$TARGET" /install.sh || fail "the image's /install.sh failed (exit status $?)"
cleanup
sync

echo "UUID=$ROOT_UUID / rw" > /iguana/mountlist
progress "installed $IMAGE_URL on $DISK, root UUID=$ROOT_UUID"
