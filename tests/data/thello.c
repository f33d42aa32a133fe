/* A program for this kernel from an ordinary toolchain: Debian's arm-linux-gnueabihf-gcc emits
 * Thumb-2 code (entry address with bit 0 set) and GNU ld puts the ELF headers in the text
 * segment and the data segment at a file offset that is not page aligned. No C library: _start
 * makes the kernel's system calls itself (svc #0, number in r7, arguments in r0-r2, result in
 * r0; r1-r3, r12 and the flags may change). Built by tests/data/thello.sh into tests/data/thello.
 * It prints a line, checks its initialised data and its bss, and exits 0 (1-2 on a mismatch). */

static long sys(long nr, long a, long b, long c)
{
	register long r0 __asm__("r0") = a;
	register long r1 __asm__("r1") = b;
	register long r2 __asm__("r2") = c;
	register long r7 __asm__("r7") = nr;
	__asm__ volatile("svc #0"
			 : "+r"(r0), "+r"(r1), "+r"(r2)
			 : "r"(r7)
			 : "r3", "r12", "cc", "memory");
	return r0;
}

static const char msg[] = "thello: hello from Thumb code\n";
volatile int answer = 42;	/* .data */
volatile int zeros[64];		/* .bss */

void _start(void)
{
	int code = 0;
	sys(1, 1, (long)msg, sizeof msg - 1);
	if (answer != 42)
		code = 1;
	for (int i = 0; i < 64; i++)
		if (zeros[i] != 0)
			code = 2;
	sys(0, code, 0, 0);
	for (;;)
		;
}
