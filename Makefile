# Two commands do everything: `make run` boots the kernel in QEMU, `make test`
# runs every test (host crates, then the in-kernel suite on BIOS and UEFI).
# Both install QEMU and OVMF when they can, or say exactly what to install.

CARGO       ?= cargo
FIRMWARE    ?= uefi
MEMORY      ?= 512M
CPUS        ?= 4
DEBUG_FIRMWARE ?= bios
KERNEL_ELF  := target/x86_64-unknown-none/debug/kernel
BOOT_IMAGE  := target/debug/boot-image
# The heap turns physical addresses into pointers (phys + offset), as a
# kernel's direct map does: Miri's permissive provenance, without a warning
# per cast. The unit tests leak metadata on purpose (`add_section_static`
# takes `&'static mut`), hence -Zmiri-ignore-leaks there only; their
# exhaustive `cached_order` table (pure arithmetic, 4.7 min under Miri) is
# skipped.
MIRI_FLAGS  ?= -Zmiri-permissive-provenance
# The machines the in-kernel suite boots are boot-image's default list
# unless KERNEL_TEST_MACHINES names others (firmware:memory[:flag...]).
# CPUs of the `make bench` machine (its per-CPU table runs 1, 2 and all).
BENCH_CPUS ?= 4
# Seconds per fuzz target in `make fuzz-smoke`.
FUZZ_SECONDS ?= 30

.PHONY: all run test host-test kernel-test console-test image debug clean kernel boot-image \
        toolchain qemu lint miri bench bench-alloc fuzz-smoke usb usb-device

all: kernel boot-image

## Build and boot the kernel in QEMU (FIRMWARE=bios|uefi, MEMORY=512M, CPUS=4,
## USB=1 to boot from an emulated USB stick instead of an IDE disk).
run: qemu kernel boot-image
	$(BOOT_IMAGE) run $(KERNEL_ELF) --firmware $(FIRMWARE) --memory $(MEMORY) --cpus $(CPUS) $(if $(USB),--usb)

## Every test: host crates, then the kernel suite on each machine.
test: host-test kernel-test

host-test: toolchain
	$(CARGO) test -p framekeep -p allocator-bench -p boot-image

# The test kernel is built by cargo's test harness; its path comes from
# cargo's JSON messages, and boot-image runs it on every machine, then boots
# the normal kernel from a USB stick without a serial port (BIOS and UEFI),
# judged by `boot complete` on the screen, then drives its shell (--console:
# serial and PS/2 keyboard checks), and prints the final `N passed, N failed`
# line over all of them.
kernel-test: qemu kernel boot-image
	@elf=$$($(CARGO) test -p kernel --target x86_64-unknown-none --no-run \
	        --message-format=json-render-diagnostics \
	      | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1); \
	test -n "$$elf" || { echo "building the test kernel failed"; exit 1; }; \
	$(BOOT_IMAGE) test "$$elf" --screen-kernel $(KERNEL_ELF) --console $(KERNEL_ELF)

## Only the console checks: boots the normal kernel, types into its shell.
console-test: qemu kernel boot-image
	$(BOOT_IMAGE) console $(KERNEL_ELF)

## Disk images: target/boot/bios.img and target/boot/uefi.img.
image: kernel boot-image
	$(BOOT_IMAGE) image $(KERNEL_ELF)

## Write the image to a USB stick: make usb DEVICE=/dev/sdX [FIRMWARE=bios|uefi]
## [YES=1]. Refuses partitions, internal, mounted and system disks, shows
## vendor, model and size, asks for the device name again (YES=1 skips the
## question, not the checks), then writes, syncs, reads back and compares.
# Only the writer needs root: it runs under sudo when DEVICE exists and is
# not writable (a missing DEVICE is refused without asking for a password).
usb: usb-device kernel boot-image
	$(BOOT_IMAGE) image $(KERNEL_ELF) --firmware $(FIRMWARE)
	@set -- $(BOOT_IMAGE) usb target/boot/$(FIRMWARE).img --device '$(DEVICE)' \
	  $(if $(filter 1,$(YES)),--yes); \
	if [ "$$(id -u)" != 0 ] && [ -e '$(DEVICE)' ] && [ ! -w '$(DEVICE)' ]; then \
	  echo "writing $(DEVICE) needs root: running boot-image under sudo"; \
	  set -- sudo "$$@"; \
	fi; \
	"$$@"

# Before anything is built: a missing DEVICE is a usage error.
usb-device:
	@test -n '$(DEVICE)' || { \
	  echo "usage: make usb DEVICE=/dev/sdX [FIRMWARE=bios|uefi] [YES=1]"; \
	  echo "DEVICE is the whole USB stick (/dev/sdb, not /dev/sdb1); lsblk lists them"; \
	  exit 2; }

## Boot halted with a gdb stub; prints the gdb command (DEBUG_FIRMWARE=bios|uefi).
debug: qemu kernel boot-image
	$(BOOT_IMAGE) debug $(KERNEL_ELF) --firmware $(DEBUG_FIRMWARE) --memory $(MEMORY)

## Formatting and lints for the whole workspace, kernel tests included.
lint: toolchain
	$(CARGO) fmt --all --check
	cd allocator/fuzz && $(CARGO) fmt --check
	$(CARGO) clippy -p framekeep -p allocator-bench -p boot-image --all-targets -- -D warnings
	$(CARGO) clippy -p kernel --target x86_64-unknown-none --all-targets -- -D warnings
	$(CARGO) clippy -p kernel --target x86_64-unknown-none --features bench -- -D warnings

## Miri (undefined behaviour, Stacked and Tree Borrows) over every layer of
## the allocator: tests/miri.rs under both models, the unit tests and the
## ownership attacks under Stacked Borrows. About 4 minutes (plus 25 s for
## Miri's sysroot once).
miri: toolchain
	@$(CARGO) miri --version >/dev/null 2>&1 || rustup component add miri
	MIRIFLAGS="$(MIRI_FLAGS)" $(CARGO) miri test -p framekeep --test miri
	MIRIFLAGS="$(MIRI_FLAGS) -Zmiri-tree-borrows" $(CARGO) miri test -p framekeep --test miri
	MIRIFLAGS="$(MIRI_FLAGS) -Zmiri-ignore-leaks" $(CARGO) miri test -p framekeep --lib
	MIRIFLAGS="$(MIRI_FLAGS) -Zmiri-ignore-leaks" $(CARGO) miri test -p framekeep --test ownership

## In-kernel cycle counts (BIOS, KVM where the probe finds it faster than
## TCG, 6 GiB so DMA32 and Normal both exist); prints a table, asserts nothing.
bench: qemu boot-image
	@echo "bench: building the kernel with the bench feature (release, target/bench)"
	$(CARGO) build -p kernel --features bench --release --target-dir target/bench
	@echo "bench: booting it under BIOS with 6 GiB and $(BENCH_CPUS) CPUs; each row prints as its benchmark ends (seconds under TCG)"
	$(BOOT_IMAGE) run target/bench/x86_64-unknown-none/release/kernel --firmware bios --memory 6G --cpus $(BENCH_CPUS)

## Every cargo-fuzz target of the allocator for FUZZ_SECONDS (30) seconds
## each (installs cargo-fuzz if missing). Logs: allocator/fuzz/target/smoke-*.log;
## a crash prints the failure and leaves its input in allocator/fuzz/artifacts/.
# -len_control=0: long inputs from the start (by default libFuzzer grows
# them slowly, and 30 s would only try a few operations per input).
fuzz-smoke: toolchain
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@cd allocator/fuzz && mkdir -p target && for t in $$($(CARGO) fuzz list); do \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  if $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -len_control=0 \
	       >target/smoke-$$t.log 2>&1; then \
	    grep '^Done' target/smoke-$$t.log || tail -n 3 target/smoke-$$t.log; \
	  else \
	    grep -Ev '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' target/smoke-$$t.log; \
	    echo "fuzz $$t failed (log: allocator/fuzz/target/smoke-$$t.log)"; exit 1; \
	  fi; \
	done

## The allocator's peer benchmarks (prints tables; asserts nothing).
bench-alloc: toolchain
	$(CARGO) bench -p allocator-bench

kernel: toolchain
	$(CARGO) build -p kernel

boot-image: toolchain
	$(CARGO) build -p boot-image

clean:
	$(CARGO) clean

# rustup installs the pinned nightly and components from rust-toolchain.toml.
toolchain:
	@command -v rustup >/dev/null || { echo "rustup is required: see https://rustup.rs"; exit 1; }
	@rustup toolchain install >/dev/null 2>&1 || rustup show active-toolchain >/dev/null

# QEMU and OVMF: install with apt-get when we can, else name the packages.
qemu:
	@missing=""; \
	command -v qemu-system-x86_64 >/dev/null || missing=" qemu-system-x86"; \
	for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_CODE.fd \
	         /usr/share/edk2/ovmf/OVMF_CODE.fd /usr/share/edk2/x64/OVMF_CODE.4m.fd; do \
	  [ -f "$$f" ] && found=1; done; \
	[ -n "$$found" ] || [ -n "$$OVMF_CODE" ] || missing="$$missing ovmf"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then sudo=""; \
	  elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; \
	  else echo "missing:$$missing -- install with: sudo apt-get install$$missing"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null || \
	    { echo "apt-get failed; install by hand: sudo apt-get install$$missing"; exit 1; }; \
	fi
