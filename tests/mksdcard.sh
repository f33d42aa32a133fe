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
    deb=$(ls "$work"/raspi-firmware_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
      if ! (cd "$work" && apt-get download raspi-firmware >/dev/null 2>&1); then
        cat >&2 <<'MSG'
sdcard: the Raspberry Pi firmware is not available. It is in Debian's 'non-free-firmware'
component; enable it and fetch the package list, e.g. on Debian 12:
    echo 'deb http://deb.debian.org/debian bookworm non-free-firmware' | \
      sudo tee /etc/apt/sources.list.d/non-free-firmware.list && sudo apt-get update
then run 'make sdcard' again (or: sudo apt-get install raspi-firmware).
MSG
        exit 1
      fi
      deb=$(ls "$work"/raspi-firmware_*.deb | head -n1)
    fi
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
