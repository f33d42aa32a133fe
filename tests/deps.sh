#!/usr/bin/env bash
# Checks for the tools the Makefile needs and installs what is missing on Debian/Ubuntu: as root
# directly, otherwise with password-less sudo; failing both it stops and prints the command.
#
#   tests/deps.sh build qemu   # Rust target, objcopy, QEMU, gdb-multiarch, mtools, dosfstools
#   tests/deps.sh sdcard       # the above for the SD image, plus the Pi firmware files
set -euo pipefail

need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  [ $# -eq 0 ] && return 0
  echo "deps: installing $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
     ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; then
    echo "deps: cannot install packages without root. Run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
}

for what in "$@"; do
  case $what in
    build)
      if ! command -v cargo >/dev/null 2>&1; then
        echo "deps: no Rust toolchain. Install rustup (https://rustup.rs, or 'apt-get install rustup'" >&2
        echo "      where the distribution has it), then run make again." >&2
        exit 1
      fi
      if command -v rustup >/dev/null 2>&1 &&
         ! rustup target list --installed 2>/dev/null | grep -qx armv7a-none-eabi; then
        rustup target add armv7a-none-eabi
      fi
      command -v llvm-objcopy >/dev/null 2>&1 || want arm-none-eabi-objcopy binutils-arm-none-eabi
      ;;
    qemu)
      want qemu-system-arm qemu-system-arm
      want gdb-multiarch gdb-multiarch
      want mcopy mtools
      want mkfs.fat dosfstools
      ;;
    sdcard)
      want mcopy mtools
      want mkfs.fat dosfstools
      want sfdisk fdisk
      ;;
    *) echo "deps: unknown group $what" >&2; exit 2 ;;
  esac
done
# De-duplicate and install.
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u | sed '/^$/d')
apt_install "${need_pkgs[@]}"
