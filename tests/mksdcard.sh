#!/usr/bin/env bash
# Builds an SD card image for a Raspberry Pi 2 without root or loop devices: 128 MiB (QEMU wants
# a power of two), an MBR with one bootable FAT32 (LBA) partition from 1 MiB to 61 MiB holding the
# firmware from Debian's raspi-firmware package (bootcode.bin, start.elf, fixup.dat), kernel7.img,
# config.txt, the user programs in /bin and the test data in /data, then a 64 MiB swap partition
# (type 0x82, 16384 page slots, no header: the kernel uses it raw) from 61 MiB to 125 MiB. The last
# 3 MiB belong to no partition (the on-target tests write scratch blocks there).
#
#   tests/mksdcard.sh [--no-firmware] [--bin <dir>] [--data <dir>] <kernel7.img> <config.txt> <out.img>
#     --no-firmware  leave the Pi firmware out (QEMU does not run it): nothing is fetched
#     --bin <dir>    copy every file of <dir> into /bin
#     --data <dir>   copy every file of <dir> into /data
# Write it with: sudo dd if=<out.img> of=/dev/sdX bs=4M conv=fsync
set -euo pipefail
firmware=1 bindir= datadir=
while [ $# -gt 0 ]; do
  case $1 in
    --no-firmware) firmware=0; shift ;;
    --bin) bindir=$2; shift 2 ;;
    --data) datadir=$2; shift 2 ;;
    *) break ;;
  esac
done
kernel=$1 config=$2 out=$3
work=$(dirname "$out")/sdcard.d
mkdir -p "$work"

# The firmware: from the installed package if present, else from the package file itself
# (apt-get download needs no root; the package lives in Debian's non-free-firmware component).
fw=/usr/lib/raspi-firmware
if [ "$firmware" -eq 1 ] && [ ! -f "$fw/start.elf" ]; then
  fw=$work/fw/usr/lib/raspi-firmware
  if [ ! -f "$fw/start.elf" ]; then
    debs=("$work"/raspi-firmware_*.deb)
    if [ ! -f "${debs[0]}" ]; then
      if ! (cd "$work" && apt-get download raspi-firmware >/dev/null 2>&1); then
        cat >&2 <<MSG
sdcard: the Raspberry Pi firmware is not available. It is Debian's raspi-firmware package, in the
'non-free-firmware' component; enable that for your Debian sources (either format, apt checked
and left as it was on failure) with:
    sudo tests/apt-component.sh
then run 'make sdcard' again. Elsewhere (e.g. Ubuntu), put raspi-firmware_*.deb from
packages.debian.org in $work/.
MSG
        exit 1
      fi
      debs=("$work"/raspi-firmware_*.deb)
    fi
    deb=${debs[0]}
    dpkg-deb -x "$deb" "$work/fw"
  fi
fi

card_mib=128 part_mib=60 swap_mib=64
part=$work/fat-$$.img
rm -f "$part" "$out.tmp"
# One sector per cluster keeps a partition this small FAT32 (at least 65525 clusters).
mkfs.fat -F 32 -s 1 -n PI2VM -C "$part" $((part_mib * 1024)) >/dev/null
if [ "$firmware" -eq 1 ]; then
  for f in bootcode.bin start.elf fixup.dat; do
    mcopy -i "$part" "$fw/$f" "::$f"
  done
fi
mcopy -i "$part" "$kernel" ::kernel7.img
mcopy -i "$part" "$config" ::config.txt
if [ -n "$bindir" ]; then
  mmd -i "$part" ::bin
  for f in "$bindir"/*; do
    [ -f "$f" ] && mcopy -i "$part" "$f" "::bin/$(basename "$f")"
  done
fi
if [ -n "$datadir" ]; then
  mmd -i "$part" ::data
  for f in "$datadir"/*; do
    [ -f "$f" ] && mcopy -i "$part" "$f" "::data/$(basename "$f")"
  done
fi

# 1 MiB for the MBR and alignment, then the partition, then unpartitioned scratch space.
truncate -s $((card_mib * 1024 * 1024)) "$out.tmp"
printf '%s\n' "start=2048, size=$((part_mib * 2048)), type=c, bootable" \
  "start=$(((1 + part_mib) * 2048)), size=$((swap_mib * 2048)), type=82" | sfdisk -q "$out.tmp"
dd if="$part" of="$out.tmp" bs=1M seek=1 conv=notrunc status=none
rm -f "$part"
mv "$out.tmp" "$out"
echo "sdcard: $out"
mdir -i "$out@@1M" ::
[ -z "$bindir" ] || mdir -i "$out@@1M" ::bin
