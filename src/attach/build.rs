//! Builds the waiter `rsmld attach` executes while its lease runs (`src/attach/wait.rs`,
//! whose module doc says why it is a separate `no_std` image) into `$OUT_DIR/rsmld-attach`,
//! and sets `cfg(rsmld_waiter)` when that worked, so that `src/attach.rs` embeds it.
//!
//! The waiter exists for x86_64 and aarch64 Linux only. It is compiled with the `$RUSTC`
//! cargo runs this build with, for the target being built, with its own fixed flags (the
//! package's profile and RUSTFLAGS are the main binary's business: the waiter is always
//! optimized for size, panics abort, no libc). A failure to compile or link it (no linker
//! for a cross target, a linker without static linking) does not fail the build: one
//! warning, no cfg, and attach waits in-process as it did before the waiter.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The waiter's source, relative to the package root.
const SOURCE: &str = "src/attach/wait.rs";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rustc-check-cfg=cfg(rsmld_waiter)");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "linux" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
        // Not a target the waiter is written for: attach waits in-process, as designed.
        return;
    }
    match build() {
        Ok(()) => println!("cargo::rustc-cfg=rsmld_waiter"),
        Err(why) => println!(
            "cargo::warning=rsmld: the attach waiter ({SOURCE}) was not built, so a waiting \
             `rsmld attach` stays the whole rsmld process (about 4 MiB instead of 16 KiB): {why}"
        ),
    }
}

/// Compiles and links the waiter into `$OUT_DIR/rsmld-attach`; why not, if not.
fn build() -> Result<(), String> {
    let var = |name: &str| env::var(name).map_err(|_| format!("cargo did not set ${name}"));
    let rustc = var("RUSTC")?;
    let out = PathBuf::from(var("OUT_DIR")?).join("rsmld-attach");
    let source = PathBuf::from(var("CARGO_MANIFEST_DIR")?).join(SOURCE);
    let target = var("TARGET")?;
    let host = var("HOST")?;
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "rsmld_attach_wait"])
        .args(["-C", "panic=abort", "-C", "opt-level=s"])
        .args(["-C", "relocation-model=static", "-C", "debuginfo=0"])
        .args(["-C", "strip=symbols", "-C", "codegen-units=1"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static", "-C", "link-arg=-no-pie"])
        .args(["-C", "link-arg=-Wl,--build-id=none"]);
    if target != host {
        cmd.args(["--target", &target]);
    }
    // The target's linker, when the build names one (`target.<triple>.linker`).
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        cmd.arg("-C").arg(format!("linker={linker}"));
    }
    cmd.arg(&source).arg("-o").arg(&out);
    let output = cmd.output().map_err(|e| format!("cannot run rustc: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The error lines (rustc's and the linker's) say enough for a warning; the rest is
        // the linker's command line.
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("error"))
            .map(str::trim)
            .take(4)
            .collect();
        if errors.is_empty() {
            return Err(format!("rustc failed ({})", output.status));
        }
        return Err(errors.join("; "));
    }
    let len = std::fs::metadata(&out)
        .map_err(|e| format!("rustc wrote no {}: {e}", out.display()))?
        .len();
    if len == 0 {
        return Err(format!("{} is empty", out.display()));
    }
    Ok(())
}
