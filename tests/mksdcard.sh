#!/usr/bin/env bash
# Builds an SD card image for a Raspberry Pi 2 without root or loop devices:
# an MBR with one bootable FAT32 (LBA) partition at 1 MiB holding the firmware from Debian's
# raspi-firmware package (bootcode.bin, start.elf, fixup.dat), kernel7.img and config.txt.
#
#   tests/mksdcard.sh <kernel7.img> <config.txt> <out.img>
# Write it with: sudo dd if=<out.img> of=/dev/sdX bs=4M conv=fsync
set -euo pipefail
kernel=$1 config=$2 out=$3
work=$(dirname "$out")/sdcard.d
mkdir -p "$work"

# The firmware: from the installed package if present, else from the package file itself
# (apt-get download needs no root; the package lives in Debian's non-free-firmware component).
fw=/usr/lib/raspi-firmware
if [ ! -f "$fw/start.elf" ]; then
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

part=$work/fat.img
rm -f "$part" "$out"
mkfs.fat -F 32 -n PI2VM -C "$part" $((64 * 1024)) >/dev/null
for f in bootcode.bin start.elf fixup.dat; do
  mcopy -i "$part" "$fw/$f" "::$f"
done
mcopy -i "$part" "$kernel" ::kernel7.img
mcopy -i "$part" "$config" ::config.txt

# 1 MiB for the MBR and alignment, then the partition.
truncate -s $((65 * 1024 * 1024)) "$out"
echo 'start=2048, type=c, bootable' | sfdisk -q "$out"
dd if="$part" of="$out" bs=1M seek=1 conv=notrunc status=none
rm -f "$part"
echo "sdcard: $out"
mdir -i "$out@@1M" ::
