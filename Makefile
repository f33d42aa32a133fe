# pi2-vm: a Raspberry Pi 2 kernel built around its virtual memory.
#
#   make          kernel ELF and kernel7.img (in build/)
#   make run      boot it in QEMU (raspi2b), serial on this terminal; quit with Ctrl-A then X
#   make test     host tests, then the on-target tests under QEMU (ELF, kernel7.img, and
#                 kernel7.img entered in non-secure HYP by a firmware stand-in), each checked by
#                 the cache-maintenance plugin tests/icache-check
#   make bench    host benchmarks, then instruction counts on the target (qemu -icount shift=0)
#   make sdcard   build/sdcard.img: FAT32 with the Pi firmware, kernel7.img, config.txt and the
#                 user programs in /bin (build/card.img: the same without the firmware, the card
#                 that `make run` and `make test` attach to QEMU)
#   make gdb      QEMU paused, gdb-multiarch attached with symbols
#   make clean

SHELL    := /bin/bash
TARGET   := armv7a-none-eabi
BUILD    := build
CARGO    ?= cargo
RUSTC    ?= rustc
ELF      := target/$(TARGET)/release/kernel
IMG      := $(BUILD)/kernel7.img
QEMU     := qemu-system-arm
QEMU_M   := -M raspi2b -m 1G
# Evaluated when a recipe runs (after `deps` may have installed one).
OBJCOPY  ?= $(shell command -v llvm-objcopy || command -v arm-none-eabi-objcopy || echo objcopy-not-found)
# Everything the kernel is built from, the user programs (src/user) included, without their
# build directory if they were built there by hand.
SRCS     := $(shell find src boot -path src/user/target -prune -o -type f -print) \
            Cargo.toml Cargo.lock build.rs link.ld

# The card QEMU boots with (128 MiB: FAT32 and a 64 MiB swap partition, no Pi firmware), attached
# as the EMMC controller's SD card.
CARD     := $(BUILD)/card.img
CARD_ARGS = -drive if=sd,format=raw,file=$(CARD)
# The QEMU plugin that reports instructions the board could fetch stale (tests/icache-check),
# built with the host's C compiler. The on-target test runs load it.
HOSTCC   ?= gcc
ICACHE_CHECK := $(BUILD)/icache-check.so
# The user programs as separate ELF files: build.rs builds them into the kernel build's OUT_DIR.
PROGRAMS := $(basename $(notdir $(wildcard src/user/src/bin/*.rs)))

.PHONY: all run test host-test target-test bench sdcard gdb clean deps deps-sdcard

all: $(IMG)

# --- set-up -------------------------------------------------------------------------------------
# Installs what is missing (as root, or with password-less sudo), or stops with the command to run.
deps:
	@tests/deps.sh build qemu

deps-sdcard:
	@tests/deps.sh sdcard

# --- build --------------------------------------------------------------------------------------
$(ELF): $(SRCS)
	$(CARGO) build --release --target $(TARGET) --bin kernel

$(IMG): $(ELF) | deps
	@mkdir -p $(BUILD)
	cp $(ELF) $(BUILD)/kernel.elf
	$(OBJCOPY) -O binary $(ELF) $@
	@echo "built $(BUILD)/kernel.elf and $@"

# The user programs for the card's /bin, taken from the newest kernel build's OUT_DIR.
# A checked-in binary (tests/data/thello.sh rebuilds it with Debian's cross compiler): never
# remade by make's built-in C rule from the source next to it.
tests/data/thello: ;

$(BUILD)/bin/.stamp: $(ELF) tests/data/thello
	@rm -rf $(BUILD)/bin && mkdir -p $(BUILD)/bin
	@out=$$(ls -td target/$(TARGET)/release/build/pi2-vm-*/out/user/$(TARGET)/release | head -1); \
	  for p in $(PROGRAMS); do cp "$$out/$$p" $(BUILD)/bin/ || exit 1; done
	@cp tests/data/thello $(BUILD)/bin/
	@touch $@

# The files the file-mapping tests use (src/user/src/bin/filemap.rs): /data/words.bin, word k
# holding k (16 pages and 100 bytes); shared.bin and persist.bin, 8 KiB of zeroes.
$(BUILD)/data/.stamp: Makefile
	@rm -rf $(BUILD)/data && mkdir -p $(BUILD)/data
	@perl -e 'print pack("V*", 0 .. 16408)' >$(BUILD)/data/words.bin
	@head -c 8192 /dev/zero >$(BUILD)/data/shared.bin
	@head -c 8192 /dev/zero >$(BUILD)/data/persist.bin
	@touch $@

$(CARD): $(IMG) $(BUILD)/bin/.stamp $(BUILD)/data/.stamp tests/mksdcard.sh boot/config.txt | deps
	tests/mksdcard.sh --no-firmware --bin $(BUILD)/bin --data $(BUILD)/data $(IMG) boot/config.txt $@ >/dev/null
	@echo "built $@"

# Test and benchmark kernels: the same kernel with the ktest/kbench feature, kept apart.
$(BUILD)/ktest.elf: $(SRCS) | deps
	@mkdir -p $(BUILD)
	$(CARGO) build --release --target $(TARGET) --bin kernel --features ktest --target-dir target/ktest
	cp target/ktest/$(TARGET)/release/kernel $@

$(BUILD)/ktest.img: $(BUILD)/ktest.elf
	$(OBJCOPY) -O binary $< $@

# A test kernel with a planted cache-maintenance bug (feature plant-stale-icache, see
# src/arch/arm/cache.rs): the plugin must report it. Runs only the tests that load programs.
$(BUILD)/ktest-stale.elf: $(SRCS) | deps
	@mkdir -p $(BUILD)
	$(CARGO) build --release --target $(TARGET) --bin kernel --features plant-stale-icache --target-dir target/ktest-stale
	cp target/ktest-stale/$(TARGET)/release/kernel $@

# No QEMU headers needed: the plugin declares the part of QEMU 7.2's plugin API it uses.
$(ICACHE_CHECK): tests/icache-check/icache_check.c | deps
	@mkdir -p $(BUILD)
	$(HOSTCC) -O2 -g -std=gnu11 -Wall -Wextra -fvisibility=hidden -shared -fPIC -o $@ $<

# The firmware stand-in of the board-entry test run (tests/firmware): assembled by rustc, linked
# at 0, copied out raw for QEMU's generic loader.
ARMSTUB_SRCS := tests/firmware/armstub.rs tests/firmware/armstub.S tests/firmware/armstub.ld

$(BUILD)/armstub.elf: $(ARMSTUB_SRCS) | deps
	@mkdir -p $(BUILD)
	$(RUSTC) --edition 2021 --target $(TARGET) --crate-type bin -C panic=abort -C opt-level=s \
	  -C link-arg=-Ttests/firmware/armstub.ld tests/firmware/armstub.rs -o $@

$(BUILD)/armstub.bin: $(BUILD)/armstub.elf
	$(OBJCOPY) -O binary $< $@

$(BUILD)/kbench.elf: $(SRCS) | deps
	@mkdir -p $(BUILD)
	$(CARGO) build --release --target $(TARGET) --bin kernel --features kbench --target-dir target/kbench
	cp target/kbench/$(TARGET)/release/kernel $@

# --- run ----------------------------------------------------------------------------------------
run: deps $(IMG) $(CARD)
	@echo "Booting in QEMU raspi2b. Quit with Ctrl-A then X."
	$(QEMU) $(QEMU_M) -nographic -kernel $(BUILD)/kernel.elf $(CARD_ARGS)

# --- test ---------------------------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory host-test
	@$(MAKE) --no-print-directory target-test

host-test:
	@echo "== host tests (cargo test) =="
	@mkdir -p $(BUILD)
	@$(CARGO) test 2>&1 | tee $(BUILD)/host-test.log; status=$${PIPESTATUS[0]}; \
	  awk '/^test result:/ { p += $$4; f += $$6 } END { printf "host: %d passed, %d failed\n", p, f }' $(BUILD)/host-test.log; \
	  exit $$status

# The ELF and board runs and the console attach the card; the image run has none, so the
# driver's no-card path is tested too (tests/qemu-run.sh checks the boot log says which).
# Every run of the test kernel is watched by the icache-check plugin and fails on its reports;
# first, the plugin must catch the planted bug of ktest-stale.elf (a short run).
target-test: $(BUILD)/ktest.elf $(BUILD)/ktest.img $(BUILD)/ktest-stale.elf $(ICACHE_CHECK) \
             $(BUILD)/armstub.bin $(IMG) $(CARD)
	@echo "== icache-check: a test kernel that leaves program text uncleaned, then not invalidated, must be reported =="
	@ICACHE_CHECK=$(ICACHE_CHECK) ICACHE_EXPECT=stale tests/qemu-run.sh elf $(BUILD)/ktest-stale.elf $(BUILD)/ktest-stale.log
	@echo "== on-target tests under QEMU: ELF, all four cores started at the entry, card attached =="
	@CARD=$(CARD) ICACHE_CHECK=$(ICACHE_CHECK) tests/qemu-run.sh elf $(BUILD)/ktest.elf $(BUILD)/ktest-elf.log
	@echo "== on-target tests under QEMU: kernel7.img loaded at 0x8000 as the firmware does, no card =="
	@CARD=none ICACHE_CHECK=$(ICACHE_CHECK) tests/qemu-run.sh image $(BUILD)/ktest.img $(BUILD)/ktest-img.log
	@echo "== on-target tests under QEMU: kernel7.img entered in non-secure HYP, as on the board, card attached =="
	@CARD=$(CARD) ARMSTUB=$(BUILD)/armstub.bin ICACHE_CHECK=$(ICACHE_CHECK) tests/qemu-run.sh board $(BUILD)/ktest.img $(BUILD)/ktest-board.log
	@echo "== the UART shell of the normal kernel: commands piped into QEMU's serial, card attached =="
	@tests/console.sh $(BUILD)/kernel.elf $(BUILD)/console.log $(CARD)
	@echo "== a shared file mapping synced, QEMU killed and started again: the data is on the card =="
	@tests/persist.sh $(BUILD)/kernel.elf $(CARD) $(BUILD)/persist.log
	@echo "== paging to swap: mem=16M on a copy of the card, processes three times larger than RAM =="
	@tests/swap.sh $(BUILD)/kernel.elf $(CARD) $(BUILD)/swap.log

# --- bench --------------------------------------------------------------------------------------
bench: deps $(BUILD)/kbench.elf $(CARD)
	@echo "== host benchmarks =="
	$(CARGO) bench --bench pmm --bench vas
	@echo "== target benchmarks: instructions, PMCCNTR under qemu -icount shift=0 =="
	@cp $(CARD) $(BUILD)/bench-card.img
	@CARD=$(BUILD)/bench-card.img tests/qemu-run.sh elf $(BUILD)/kbench.elf $(BUILD)/kbench.log -icount shift=0

# --- SD card ------------------------------------------------------------------------------------
sdcard: $(IMG) $(BUILD)/bin/.stamp $(BUILD)/data/.stamp deps-sdcard
	tests/mksdcard.sh --bin $(BUILD)/bin --data $(BUILD)/data $(IMG) boot/config.txt $(BUILD)/sdcard.img

# --- debug --------------------------------------------------------------------------------------
gdb: deps $(IMG) $(CARD)
	@echo "QEMU waits for gdb on :1234; the session starts at _start (physical 0x8000)."
	$(QEMU) $(QEMU_M) -nographic -kernel $(BUILD)/kernel.elf $(CARD_ARGS) -S -s & \
	  qemu=$$!; \
	  gdb-multiarch -q $(BUILD)/kernel.elf -ex 'target remote :1234' -ex 'break kernel_entry'; \
	  kill $$qemu 2>/dev/null || true

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
