#!/usr/bin/env bash
# Rebuilds tests/data/thello from thello.c with Debian's cross compiler (package
# gcc-arm-linux-gnueabihf; not needed by `make test`, which uses the checked-in file).
set -euo pipefail
cd "$(dirname "$0")"
arm-linux-gnueabihf-gcc -Os -static -nostdlib -ffreestanding -fno-asynchronous-unwind-tables \
  -Wl,--build-id=none -s -o thello thello.c
