#!/usr/bin/env bash
# Runs a test or benchmark kernel under QEMU raspi2b and checks how it ended.
#
#   tests/qemu-run.sh elf   <kernel.elf>   <log> [extra qemu args]   # as QEMU loads an ELF
#   tests/qemu-run.sh image <kernel7.img>  <log> [extra qemu args]   # as the Pi firmware does:
#                                                                    # raw image at 0x8000
# The kernel ends QEMU through semihosting (exit status 0 = all passed). A hang is ended by the
# timeout (TEST_TIMEOUT seconds, default 120) and counts as a failure.
set -u
kind=$1 image=$2 log=$3
shift 3
timeout_s=${TEST_TIMEOUT:-120}
case $kind in
  elf)   load=(-kernel "$image") ;;
  image) load=(-bios "$image") ;;   # raspi2b loads the "firmware" raw at 0x8000, core 0 only
  *) echo "usage: $0 elf|image <file> <log> [qemu args]" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$log")"
timeout --foreground "$timeout_s" qemu-system-arm -M raspi2b -m 1G -display none -no-reboot \
  -semihosting-config enable=on,target=native -monitor none -serial stdio \
  "${load[@]}" "$@" </dev/null 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ]; then
  echo "qemu: timed out after ${timeout_s}s (a hang counts as a failure)" | tee -a "$log"
  echo "target: 0 passed, 1 failed" | tee -a "$log"
fi
exit "$status"
