//! `rsmld-attach`: what a waiting `rsmld attach` becomes once it has handed its lease over.
//!
//! After the hello, attach has nothing left to do but wait (for hours: the whole lease) for
//! the one status byte the server sends when the lease ends, and exit with it. Waiting as the
//! `rsmld` binary costs 4 MiB of resident memory per lease (the pages of the 6 MB binary and
//! of libc that start-up and the attach path touched, 64 KiB per fault with the kernel's
//! fault-around), 64 MiB on a host of 16 leases. So attach executes this program instead
//! (from a memfd, `src/attach.rs`), and the process waits at 12-20 KiB.
//!
//! It is a separate image, not a module of the crate: any `std` program maps libc and
//! the runtime's start-up (2 MiB dynamic, 1.2 MiB static), so this one is `no_std` and
//! `no_main` with its own `_start`, raw system calls and no libc at all: a static ELF of
//! under 2 KB. A cargo `[[bin]]` cannot be that (the dev profile unwinds, which `no_std`
//! does not support), so `src/attach/build.rs` compiles it with `$RUSTC` (panic=abort,
//! opt-level=s, static relocation, linked with `-nostartfiles -nostdlib -static -no-pie`)
//! into `$OUT_DIR`, for x86_64 and aarch64 Linux only; elsewhere, or when that fails,
//! attach waits in-process as before.
//!
//! The contract with attach: the server's socket is descriptor 3 (inherited, everything
//! else attach held is closed on exec; stdin and stdout are /dev/null, stderr is attach's).
//! Read one byte from it (again on EINTR): exit with that byte. End of stream or an error:
//! one line on stderr, the same `rsmld[attach] ERROR ...` line attach itself writes, and
//! exit 1. Nothing allocates, nothing formats with `core::fmt`, and the panic handler (no
//! panic is reachable) exits 101.

#![no_std]
#![no_main]

use core::arch::global_asm;

/// The descriptor attach leaves the server's socket on.
const SOCKET_FD: usize = 3;
/// stderr.
const STDERR_FD: usize = 2;
/// Exit status when the lease's status cannot be read (`EXIT_FAILURE` in `src/app.rs`).
const EXIT_FAILURE: usize = 1;

/// `EINTR`, `EBADF` and `ECONNRESET`: the same numbers on x86_64 and aarch64 Linux.
const EINTR: isize = 4;
const EBADF: isize = 9;
const ECONNRESET: isize = 104;

/// What the process is called in `ps -o comm` and /proc/PID/comm (NUL-terminated, at most
/// 16 bytes with the NUL).
const NAME: &[u8] = b"rsmld-attach\0";

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const READ: usize = 0;
    pub const WRITEV: usize = 20;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;

    /// A system call of up to three arguments: the kernel's result (negative errno on
    /// failure).
    ///
    /// # Safety
    /// `n` and its arguments must be a system call whose pointers point at memory valid
    /// for what that call does with them.
    pub unsafe fn call3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's contract; `syscall` clobbers rcx and r11 and nothing else.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const READ: usize = 63;
    pub const WRITEV: usize = 66;
    pub const PRCTL: usize = 167;
    pub const EXIT_GROUP: usize = 94;

    /// A system call of up to three arguments: the kernel's result (negative errno on
    /// failure).
    ///
    /// # Safety
    /// `n` and its arguments must be a system call whose pointers point at memory valid
    /// for what that call does with them.
    pub unsafe fn call3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's contract; `svc 0` returns in x0 and clobbers nothing else.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                options(nostack),
            );
        }
        ret
    }
}

// The entry point: the kernel starts the process here with the stack pointer 16-byte
// aligned and no return address, not as a C function expects to be called; so align the
// stack, clear the frame pointer (the end of any backtrace) and call the Rust entry.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym wait_main,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "bl {main}",
    "brk #0",
    main = sym wait_main,
);

/// Names the process, waits for the status byte, exits with it (or with 1 after the line
/// saying why there is none).
extern "C" fn wait_main() -> ! {
    // SAFETY: PR_SET_NAME (15) reads a NUL-terminated string of at most 16 bytes; NAME is
    // one. Failing to rename changes nothing else, so its result is ignored.
    unsafe {
        sys::call3(sys::PRCTL, 15, NAME.as_ptr() as usize, 0);
    }
    let mut status = [0u8; 1];
    let n = loop {
        // SAFETY: read writes at most 1 byte into `status`, which is 1 byte.
        let n = unsafe { sys::call3(sys::READ, SOCKET_FD, status.as_mut_ptr() as usize, 1) };
        if n != -EINTR {
            break n;
        }
    };
    if n == 1 {
        exit(status[0] as usize);
    }
    if n == 0 {
        say([b"the server closed the lease without a status (did it die?)", b"", b"", b"", b""]);
    } else {
        let errno = -n;
        let mut digits = [0u8; 20];
        let number = decimal(errno as usize, &mut digits);
        let what: &[u8] = match errno {
            ECONNRESET => b"Connection reset by peer",
            EBADF => b"Bad file descriptor",
            _ => b"error",
        };
        say([b"lost the server: ", what, b" (os error ", number, b")"]);
    }
    exit(EXIT_FAILURE)
}

/// One piece of the line for `writev` (`struct iovec`).
#[repr(C)]
struct Piece {
    base: *const u8,
    len: usize,
}

/// Writes `rsmld[attach] ERROR `, the `parts` and a newline to stderr with one `writev`
/// (one line, not interleaved with another writer's), the rest again if it was cut short.
/// Nothing here can panic: no indexing that is not checked by `get`.
fn say(parts: [&[u8]; 5]) {
    let piece = |s: &[u8]| Piece {
        base: s.as_ptr(),
        len: s.len(),
    };
    let mut pieces = [
        piece(b"rsmld[attach] ERROR "),
        piece(parts[0]),
        piece(parts[1]),
        piece(parts[2]),
        piece(parts[3]),
        piece(parts[4]),
        piece(b"\n"),
    ];
    let mut first = 0;
    while let Some(rest) = pieces.get(first..) {
        if rest.is_empty() {
            return;
        }
        // SAFETY: writev reads `rest.len()` iovecs from `rest`, each naming bytes of a
        // live slice (or the unwritten tail of one, below).
        let n = unsafe {
            sys::call3(
                sys::WRITEV,
                STDERR_FD,
                rest.as_ptr() as usize,
                rest.len(),
            )
        };
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            // stderr is gone: there is no one left to tell.
            return;
        }
        let mut written = n as usize;
        while let Some(p) = pieces.get_mut(first) {
            if written < p.len {
                // SAFETY: `written` < `p.len`: still inside the piece's slice.
                p.base = unsafe { p.base.add(written) };
                p.len -= written;
                break;
            }
            written -= p.len;
            first += 1;
        }
    }
}

/// `value` in decimal, in the tail of `buf`.
fn decimal(mut value: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    while let Some(digit) = at.checked_sub(1).and_then(|i| buf.get_mut(i)) {
        *digit = b'0' + (value % 10) as u8;
        at -= 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// Ends the process with `code` (its low 8 bits).
fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes no pointer and does not return.
        unsafe {
            sys::call3(sys::EXIT_GROUP, code, 0, 0);
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}
