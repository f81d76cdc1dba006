//! The `rsmld` binary: everything lives in the library; see [`rsmld::app`].

fn main() -> std::process::ExitCode {
    rsmld::app::main(None)
}
