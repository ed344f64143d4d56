//! The real-mode trampoline an application processor starts in.
//!
//! A start-up IPI wakes a CPU in 16-bit real mode at `vector << 12`, so this
//! code is copied to a page below 1 MiB and runs from there: it loads a
//! small GDT, enters 32-bit protected mode, turns on PAE, long mode, NX and
//! paging with a page table the boot CPU prepared (the kernel's upper half
//! plus the first 2 MiB identity-mapped, so the trampoline itself stays
//! reachable), enters 64-bit mode, reads and then claims the parameter
//! block, and jumps to the kernel's AP entry on the stack the boot CPU gave
//! it.
//!
//! Every address the code needs is in [`Params`], at [`PARAMS_OFFSET`] in
//! the same page, filled in by the boot CPU before each start-up.

use core::sync::atomic::AtomicU32;

/// Where [`Params`] lies in the trampoline page.
pub const PARAMS_OFFSET: usize = 0xe00;

/// The parameter block; offsets are fixed by the assembly below.
#[repr(C)]
pub struct Params {
    /// `lgdt` operand: limit, then the GDT's linear address in two halves
    /// (unaligned in the operand, so not one `u32` field).
    pub gdtr: [u16; 3],
    _pad0: u16,
    /// Far pointer to the 32-bit code: linear offset, selector.
    pub protected_entry: u32,
    pub protected_selector: u16,
    _pad1: u16,
    /// Far pointer to the 64-bit code.
    pub long_entry: u32,
    pub long_selector: u16,
    _pad2: u16,
    /// The trampoline's level-4 table (below 4 GiB).
    pub trampoline_cr3: u32,
    _pad3: u32,
    /// The kernel's level-4 table, loaded by the AP entry.
    pub kernel_cr3: u64,
    pub stack_top: u64,
    /// `extern "sysv64" fn(cpu_index, kernel_cr3) -> !`.
    pub entry: u64,
    pub cpu_index: u64,
    /// 0 until an AP claims this start-up; a late AP finding 1 halts.
    pub claimed: AtomicU32,
    _pad4: u32,
    /// Null, 32-bit code (0x08), data (0x10), 64-bit code (0x18).
    pub gdt: [u64; 4],
}

/// Selectors of the trampoline's GDT.
pub const CODE32: u16 = 0x08;
pub const CODE64: u16 = 0x18;

/// The trampoline's GDT: flat 4 GiB segments.
pub const GDT: [u64; 4] = [
    0,
    0x00cf_9a00_0000_ffff, // 32-bit code
    0x00cf_9200_0000_ffff, // data
    0x00af_9a00_0000_ffff, // 64-bit code
];

const _: () = {
    assert!(core::mem::offset_of!(Params, gdtr) == 0x00);
    assert!(core::mem::offset_of!(Params, protected_entry) == 0x08);
    assert!(core::mem::offset_of!(Params, long_entry) == 0x10);
    assert!(core::mem::offset_of!(Params, trampoline_cr3) == 0x18);
    assert!(core::mem::offset_of!(Params, kernel_cr3) == 0x20);
    assert!(core::mem::offset_of!(Params, stack_top) == 0x28);
    assert!(core::mem::offset_of!(Params, entry) == 0x30);
    assert!(core::mem::offset_of!(Params, cpu_index) == 0x38);
    assert!(core::mem::offset_of!(Params, claimed) == 0x40);
    assert!(core::mem::offset_of!(Params, gdt) == 0x48);
    assert!(PARAMS_OFFSET + core::mem::size_of::<Params>() <= 4096);
};

core::arch::global_asm!(
    r#"
    .section .text.trampoline, "ax"
    .global trampoline_start
    .global trampoline_protected
    .global trampoline_long
    .global trampoline_end
    .code16
trampoline_start:
    cli
    cld
    xorl %ebx, %ebx
    movw %cs, %bx
    movw %bx, %ds
    shll $4, %ebx                 # ebx: the page's linear address
    lgdtl 0xe00                   # Params.gdt_limit/gdt_base
    movl %cr0, %eax
    orl $1, %eax                  # PE
    movl %eax, %cr0
    ljmpl *0xe08                  # Params.protected_entry

    .code32
trampoline_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $(1 << 5), %eax           # PAE
    movl %eax, %cr4
    movl 0xe18(%ebx), %eax        # Params.trampoline_cr3
    movl %eax, %cr3
    movl $0xc0000080, %ecx        # IA32_EFER
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax   # LME, NXE
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16)), %eax  # PG, WP
    movl %eax, %cr0
    ljmpl *0xe10(%ebx)            # Params.long_entry

    .code64
trampoline_long:
    movl %ebx, %ebx               # clear the upper half
    movq 0xe28(%rbx), %rsp        # Params.stack_top
    movq 0xe38(%rbx), %rdi        # Params.cpu_index
    movq 0xe20(%rbx), %rsi        # Params.kernel_cr3
    movq 0xe30(%rbx), %r8         # Params.entry
    movl $1, %ecx
    xorl %eax, %eax
    lock cmpxchgl %ecx, 0xe40(%rbx)   # claim Params.claimed, after reading it all
    jnz 2f
    xorl %ebp, %ebp
    pushq $0                      # as if called: rsp+8 is 16-byte aligned
    jmpq *%r8
2:  cli                           # a late AP: the block is someone else's
    hlt
    jmp 2b
trampoline_end:
    .code64
    .text
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trampoline_start: u8;
    static trampoline_protected: u8;
    static trampoline_long: u8;
    static trampoline_end: u8;
}

/// The trampoline's machine code, to be copied to its page.
pub fn code() -> &'static [u8] {
    let start = &raw const trampoline_start;
    let end = &raw const trampoline_end;
    let len = end as usize - start as usize;
    assert!(
        len <= PARAMS_OFFSET,
        "the trampoline overlaps its parameters"
    );
    // SAFETY: both symbols delimit the assembled trampoline in .text,
    // which is mapped and never written.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// Offsets of the 32-bit and 64-bit entry points within the page.
pub fn entry_offsets() -> (u32, u32) {
    let start = &raw const trampoline_start as usize;
    let protected = &raw const trampoline_protected as usize;
    let long = &raw const trampoline_long as usize;
    ((protected - start) as u32, (long - start) as u32)
}
