#!/usr/bin/env bash
# Runs a test or benchmark kernel under QEMU raspi2b and checks how it ended.
#
#   tests/qemu-run.sh elf   <kernel.elf>   <log> [extra qemu args]   # as QEMU loads an ELF
#   tests/qemu-run.sh image <kernel7.img>  <log> [extra qemu args]   # as the Pi firmware does:
#                                                                    # raw image at 0x8000 (and
#                                                                    # a branch to it at 0)
#   tests/qemu-run.sh board <kernel7.img>  <log> [extra qemu args]   # entered as on the board:
#       the firmware stand-in $ARMSTUB (default build/armstub.bin, see tests/firmware/armstub.S)
#       at 0 and the raw image at 0x8000, both by QEMU's generic loader, EL3 kept; every core
#       starts at 0 in Secure SVC, the stand-in enters the kernel on core 0 in non-secure HYP.
#       The boot log must then say `entry mode : HYP`, or the run fails.
# CARD=<image> attaches that SD card image (-drive if=sd) and the boot log must then report a
# card (`card: N blocks`); CARD=none attaches none and the log must say `card: none`; without
# CARD nothing about a card is checked (benchmarks).
# A boot log that reports the secondary cores must say all three are online.
# ICACHE_CHECK=<plugin.so> runs QEMU with the cache-maintenance checker (tests/icache-check,
# built as build/icache-check.so), which reports instructions fetched from memory written
# without the D-cache clean and I-cache invalidation the board needs (QEMU itself never shows
# it). The kernel must be a test kernel (its cleans by line carry the probe loads the plugin
# needs). The run then fails on any report or setup error, and when the plugin's closing
# summary is missing. With ICACHE_EXPECT=stale it is the other way round for the reports: the
# run fails unless both kinds appear (a test kernel with a planted bug).
# The kernel ends QEMU through semihosting (exit status 0 = all passed). A hang is ended by the
# timeout (TEST_TIMEOUT seconds, default 120, 240 with the plugin, which slows QEMU down) and
# counts as a failure. Output containing NEVER-PRINTED fails the run too: the hostile-program
# test keeps those bytes in memory that a refused `write` must not print.
set -u
kind=$1 image=$2 log=$3
shift 3
plugin=()
if [ -n "${ICACHE_CHECK:-}" ]; then
  [ -r "$ICACHE_CHECK" ] || { echo "qemu-run: no icache-check plugin at $ICACHE_CHECK (make $ICACHE_CHECK)" >&2; exit 2; }
  case $ICACHE_CHECK in */*) ;; *) ICACHE_CHECK=./$ICACHE_CHECK ;; esac   # not a library search
  plugin=(-plugin "$ICACHE_CHECK,max-reports=10")
  timeout_s=${TEST_TIMEOUT:-240}
else
  timeout_s=${TEST_TIMEOUT:-120}
fi
case ${ICACHE_EXPECT:-} in
  ''|stale) ;;
  *) echo "qemu-run: ICACHE_EXPECT must be empty or 'stale'" >&2; exit 2 ;;
esac
case $kind in
  elf)   load=(-kernel "$image") ;;
  # raspi2b loads the "firmware" raw at 0x8000 but starts all four cores at 0, where there is
  # nothing: they would run through zeros, and then through the kernel's L1 table at 0x4000 while
  # core 0 writes it (a core could loop there, or store; icache-check reports it). A branch at 0
  # sends every core to the entry, as -kernel does; the boot stub parks cores 1-3.
  image) load=(-bios "$image" -device "loader,addr=0x0,data=0xea001ffe,data-len=4") ;;  # b 0x8000
  board)
    armstub=${ARMSTUB:-build/armstub.bin}
    [ -r "$armstub" ] || { echo "qemu-run: no firmware stand-in at $armstub (make $armstub)" >&2; exit 2; }
    load=(-device "loader,file=$armstub,addr=0x0,force-raw=on"
          -device "loader,file=$image,addr=0x8000,force-raw=on") ;;
  *) echo "usage: $0 elf|image|board <file> <log> [qemu args]" >&2; exit 2 ;;
esac
card=()
case ${CARD:-} in
  ''|none) ;;
  *) [ -r "$CARD" ] || { echo "qemu-run: no card image at $CARD" >&2; exit 2; }
     card=(-drive "if=sd,format=raw,file=$CARD") ;;
esac
mkdir -p "$(dirname "$log")"
timeout --foreground "$timeout_s" qemu-system-arm -M raspi2b -m 1G -display none -no-reboot \
  -semihosting-config enable=on,target=native -monitor none -serial stdio \
  "${load[@]}" "${card[@]}" "${plugin[@]}" "$@" </dev/null 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ]; then
  echo "qemu: timed out after ${timeout_s}s (a hang counts as a failure)" | tee -a "$log"
  echo "target: 0 passed, 1 failed" | tee -a "$log"
fi
if [ "$kind" = board ] && ! grep -Eq '^ *entry mode *: HYP' "$log"; then
  echo "qemu-run: the boot log does not say 'entry mode : HYP': the kernel was not entered in HYP" | tee -a "$log"
  [ "$status" -eq 0 ] && status=1
fi
# The firmware stand-in passes `mem=512M` on the command line: the board run must say so and use it.
if [ "$kind" = board ] && ! grep -Eq '^ *RAM in use *: 512 MiB of [0-9]+ MiB \(mem=512 MiB' "$log"; then
  echo "qemu-run: the boot log does not say 'RAM in use : 512 MiB of ... (mem=512 MiB)'" | tee -a "$log"
  [ "$status" -eq 0 ] && status=1
fi
case ${CARD:-} in
  '') ;;
  none) pattern='^card: none' ;;
  *) pattern='^card: [0-9]+ blocks' ;;
esac
if [ -n "${CARD:-}" ] && ! grep -Eq "$pattern" "$log"; then
  echo "qemu-run: the boot log does not report the card as expected (/$pattern/)" | tee -a "$log"
  [ "$status" -eq 0 ] && status=1
fi
# Every boot path starts cores 1-3 (-kernel, the branch at 0, the firmware stand-in): all three
# must come up.
if grep -q '^secondary cores:' "$log" && ! grep -q '^secondary cores: 3 of 3 online' "$log"; then
  echo "qemu-run: not every secondary core came online" | tee -a "$log"
  [ "$status" -eq 0 ] && status=1
fi
# The plugin's lines can follow kernel output on the same line: never anchored at the start.
if [ -n "${ICACHE_CHECK:-}" ]; then
  if ! grep -aq 'icache-check: summary:' "$log"; then
    echo "qemu-run: no summary from the icache-check plugin: it was not loaded or did not finish" | tee -a "$log"
    [ "$status" -eq 0 ] && status=1
  fi
  if grep -aq 'icache-check: setup:' "$log"; then
    echo "qemu-run: the icache-check plugin cannot check this kernel (its 'setup:' line says why)" | tee -a "$log"
    [ "$status" -eq 0 ] && status=1
  fi
  if [ -z "${ICACHE_EXPECT:-}" ] && grep -aq 'icache-check: vcpu [0-9]* fetched' "$log"; then
    echo "qemu-run: instructions were fetched that the board could have served stale (the icache-check lines above)" | tee -a "$log"
    [ "$status" -eq 0 ] && status=1
  fi
  if [ "${ICACHE_EXPECT:-}" = stale ]; then
    for what in 'without a D-cache clean' 'without an I-cache invalidation'; do
      if ! grep -aq "icache-check: vcpu [0-9]* fetched .* $what" "$log"; then
        echo "qemu-run: the planted bug was not reported: no icache-check line says '$what'" | tee -a "$log"
        [ "$status" -eq 0 ] && status=1
      fi
    done
  fi
fi
if grep -q 'NEVER-PRINTED' "$log"; then
  echo "qemu-run: the output holds bytes a refused write must not have printed" | tee -a "$log"
  [ "$status" -eq 0 ] && status=1
fi
exit "$status"
