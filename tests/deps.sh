#!/usr/bin/env bash
# Checks for the tools the Makefile needs and installs what is missing on Debian/Ubuntu: as root
# directly, otherwise with password-less sudo; failing both it stops and prints the command.
#
#   tests/deps.sh build qemu   # Rust target, objcopy, QEMU, gdb-multiarch, mtools, dosfstools, fdisk,
#                              # gcc (the QEMU plugin tests/icache-check)
#   tests/deps.sh sdcard       # mtools, dosfstools, fdisk, and the Pi firmware made reachable:
#                              # Debian's non-free-firmware component (tests/apt-component.sh)
#   tests/deps.sh ci           # what .ci/run's own checks use besides (gpg)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need_pkgs=()
want_firmware=0
want() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }

# How to run a command as root here: "" (we are root), "sudo -n", or "none".
if [ "$(id -u)" -eq 0 ]; then root_via=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then root_via="sudo -n"
else root_via=none
fi
as_root() {
  if [ -z "$root_via" ]; then "$@"; else sudo -n "$@"; fi
}

# run_root WHAT CMD...: runs CMD as root with its output kept; on failure says which command
# failed, its exit status and last lines, and stops.
run_root() {
  local what=$1 log status=0
  shift
  log=$(mktemp)
  as_root "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "deps: '$*' failed (exit $status)${root_via:+ under $root_via}; last lines:" >&2
    tail -n 12 "$log" | sed 's/^/    /' >&2
    echo "deps: $what" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

apt_install() {
  [ $# -eq 0 ] && return 0
  if [ "$root_via" = none ]; then
    echo "deps: missing packages: $*" >&2
    echo "deps: not root and no password-less sudo, so they cannot be installed from here. Run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
  echo "deps: installing $*"
  run_root "fix what apt reports ('apt-get update' must succeed), then run make again." \
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  run_root "check that apt can install them (apt-cache policy $*), then run make again." \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# The Raspberry Pi boot files for the SD image (tests/mksdcard.sh): installed in
# /usr/lib/raspi-firmware, or raspi-firmware downloadable, which on Debian needs the
# non-free-firmware component. Enabled by tests/apt-component.sh (as root), which leaves apt as
# it was if anything goes wrong.
firmware() {
  local cand status=0
  [ -f /usr/lib/raspi-firmware/start.elf ] && return 0
  cand=$(apt-cache policy raspi-firmware 2>/dev/null | awk '/Candidate:/ { print $2 }')
  [ -n "$cand" ] && [ "$cand" != "(none)" ] && return 0
  if [ "$root_via" = none ]; then
    echo "deps: the Pi firmware (Debian's raspi-firmware, component non-free-firmware) is not"
    echo "      available from apt, and this is not root (no password-less sudo). To enable it:"
    echo "    sudo $here/apt-component.sh"
    return 0
  fi
  echo "deps: making raspi-firmware (the Pi boot files) available"
  as_root "$here/apt-component.sh" || status=$?
  case $status in
    0) ;;
    2) echo "deps: continuing; 'make sdcard' needs the firmware files as described above." ;;
    *) echo "deps: could not enable Debian's non-free-firmware component (apt unchanged; see above)." >&2
       exit 1 ;;
  esac
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
      want sfdisk fdisk   # the card image QEMU boots with (tests/mksdcard.sh --no-firmware)
      want gcc gcc        # the QEMU plugin the on-target tests run with (tests/icache-check)
      ;;
    sdcard)
      want mcopy mtools
      want mkfs.fat dosfstools
      want sfdisk fdisk
      want_firmware=1
      ;;
    ci)
      want gpg gpg      # tests/apt-component-test.sh signs its local test archive
      ;;
    *) echo "deps: unknown group $what" >&2; exit 2 ;;
  esac
done
# De-duplicate and install.
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u | sed '/^$/d')
apt_install "${need_pkgs[@]}"
[ "$want_firmware" -eq 0 ] || firmware
