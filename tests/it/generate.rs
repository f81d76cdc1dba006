//! `rsmld generate`: the man page and the shell completions come from the same clap
//! definition as the parser, run through the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::process::{Command, Output};

use clap::CommandFactory as _;
use rsmld::cli::config::Cli;

fn rsmld(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsmld"))
        .args(args)
        .output()
        .expect("run rsmld")
}

fn stdout_of(args: &[&str]) -> String {
    let out = rsmld(args);
    assert!(
        out.status.success(),
        "rsmld {args:?}: {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every visible flag of the record processor, as the parser knows it.
fn flags() -> Vec<(Option<char>, String)> {
    let cmd = Cli::command();
    let flags: Vec<_> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| (a.get_short(), l.to_owned())))
        .collect();
    assert!(
        flags.len() > 20,
        "the record processor has many flags: {flags:?}"
    );
    flags
}

/// roff writes `-` as `\-`.
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

#[test]
fn man_page_names_every_flag() {
    let man = stdout_of(&["generate", "man"]);
    assert!(man.contains(".TH rsmld 1"), "a section-1 page: {man}");
    for (short, long) in flags() {
        let long = format!("\\fB{}\\fR", roff(&format!("--{long}")));
        assert!(man.contains(&long), "{long} missing from the man page");
        if let Some(c) = short {
            let short = format!("\\fB{}\\fR", roff(&format!("-{c}")));
            assert!(man.contains(&short), "{short} missing from the man page");
        }
    }
    // The tools are listed too.
    for sub in ["kpl", "check"] {
        assert!(man.contains(sub), "subcommand {sub} missing");
    }
}

#[test]
fn bash_completions_parse_register_and_offer_every_flag() {
    let script = stdout_of(&["generate", "completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rsmld.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Sourced, it registers a completion function for rsmld.
    let registered = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && complete -p rsmld")
        .arg("bash")
        .arg(&path)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.status.success()
            && line.contains("_rsmld")
            && line.trim_end().ends_with("rsmld"),
        "complete -p rsmld: {line} {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    for (_, long) in flags() {
        assert!(
            script.contains(&format!("--{long} ")) || script.contains(&format!("--{long}\"")),
            "--{long} missing from the bash completions"
        );
    }
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_a_usage_error() {
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let script = stdout_of(&["generate", "completions", shell]);
        assert!(script.contains("rsmld"), "{shell}: {script}");
        assert!(script.contains("max-in-flight"), "{shell} lacks a flag");
    }
    let out = rsmld(&["generate", "completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn generate_is_hidden_from_help() {
    let help = stdout_of(&["--help"]);
    assert!(help.contains("check"), "{help}");
    assert!(!help.contains("generate"), "{help}");
}
