//! Wrapper commands in `executableName`: `env RUST_LOG=debug rsmld …`, `nice -n 5 rsmld …`.
//!
//! A wrapper runs the rest of its command line as a program, after its own options (and,
//! for `env`, `NAME=VALUE` assignments). `rsmld check` must look past it to find the rsmld
//! command line it checks, or it reports the wrapper's arguments as rsmld's. Each wrapper's
//! options are those of its GNU coreutils / util-linux / numactl manual: which take a value
//! (`-n 5`, `-n5`, `--adjustment=5`), which put it in a mode that runs no command
//! (`taskset -p`, `chrt -p`, `ionice -p`), and how many operands come before the command
//! (`taskset MASK`, `chrt PRIORITY`, `timeout DURATION`). A form this does not follow
//! (`env -S "…"`) is reported as such, never guessed.

use std::path::Path;

/// What a wrapper's command line runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeled {
    /// The wrappers in order (each as written) and the command they run in the end.
    Command {
        /// Every wrapper program, outermost first.
        wrappers: Vec<String>,
        /// Remarks about a wrapper (`timeout` ends the processor after a while).
        notes: Vec<String>,
        /// The wrapped command: program and arguments.
        command: Vec<String>,
    },
    /// A wrapper whose command cannot be followed: which wrapper, and why.
    Opaque {
        /// Every wrapper program up to and including the one that cannot be followed.
        wrappers: Vec<String>,
        /// Why.
        why: String,
    },
}

struct Spec {
    name: &'static str,
    /// Short options that take a value (attached, `-n5`, or the next argument).
    short_values: &'static str,
    /// Long options that take a value (`--opt=v` or `--opt v`).
    long_values: &'static [&'static str],
    /// Options after which no command follows, or that this does not follow.
    stops: &'static [&'static str],
    /// Operands before the command.
    operands: Operands,
    /// `NAME=VALUE` assignments may come before the command (`env`).
    assignments: bool,
}

#[derive(Clone, Copy)]
enum Operands {
    None,
    One,
    /// One, if it is a number (`chrt`'s priority may be left out).
    OptionalNumber,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "env",
        short_values: "uCS",
        long_values: &["--unset", "--chdir", "--split-string"],
        stops: &["-S", "--split-string"],
        operands: Operands::None,
        assignments: true,
    },
    Spec {
        name: "nice",
        short_values: "n",
        long_values: &["--adjustment"],
        stops: &[],
        operands: Operands::None,
        assignments: false,
    },
    Spec {
        name: "ionice",
        short_values: "cnpPu",
        long_values: &["--class", "--classdata", "--pid", "--pgid", "--uid"],
        stops: &["-p", "-P", "-u", "--pid", "--pgid", "--uid"],
        operands: Operands::None,
        assignments: false,
    },
    Spec {
        name: "taskset",
        short_values: "",
        long_values: &[],
        stops: &["-p", "--pid"],
        operands: Operands::One,
        assignments: false,
    },
    Spec {
        name: "chrt",
        short_values: "TPD",
        long_values: &["--sched-runtime", "--sched-period", "--sched-deadline"],
        stops: &["-p", "--pid", "-m", "--max"],
        operands: Operands::OptionalNumber,
        assignments: false,
    },
    Spec {
        name: "numactl",
        short_values: "imNCpPw",
        long_values: &[
            "--interleave",
            "--membind",
            "--cpunodebind",
            "--physcpubind",
            "--preferred",
            "--preferred-many",
            "--weighted-interleave",
        ],
        stops: &["-s", "--show", "-H", "--hardware"],
        operands: Operands::None,
        assignments: false,
    },
    Spec {
        name: "setpriv",
        short_values: "",
        long_values: &[
            "--reuid",
            "--regid",
            "--ruid",
            "--rgid",
            "--euid",
            "--egid",
            "--groups",
            "--inh-caps",
            "--ambient-caps",
            "--bounding-set",
            "--securebits",
            "--pdeathsig",
            "--selinux-label",
            "--apparmor-profile",
            "--landlock-access",
            "--landlock-rule",
            "--seccomp-filter",
        ],
        stops: &["-d", "--dump"],
        operands: Operands::None,
        assignments: false,
    },
    Spec {
        name: "timeout",
        short_values: "sk",
        long_values: &["--signal", "--kill-after"],
        stops: &[],
        operands: Operands::One,
        assignments: false,
    },
    Spec {
        name: "stdbuf",
        short_values: "ioe",
        long_values: &["--input", "--output", "--error"],
        stops: &[],
        operands: Operands::None,
        assignments: false,
    },
];

fn spec(program: &str) -> Option<&'static Spec> {
    let name = Path::new(program).file_name()?.to_str()?;
    SPECS.iter().find(|s| s.name == name)
}

/// Follows `argv` through every wrapper at its start to the command they run. A command
/// line that starts with no wrapper is returned as it is.
pub fn peel(argv: &[String]) -> Peeled {
    let mut wrappers = Vec::new();
    let mut notes = Vec::new();
    let mut rest = argv;
    while let Some(spec) = rest.first().and_then(|p| spec(p)) {
        wrappers.push(rest[0].clone());
        match skip(spec, rest) {
            Ok(i) if i < rest.len() => {
                if spec.name == "timeout" {
                    notes.push(format!(
                        "timeout ends the record processor after {}, while it holds its lease: the daemon then loses that shard's processor mid-stream; remove it",
                        rest[i - 1]
                    ));
                }
                rest = &rest[i..];
            }
            Ok(_) => {
                return Peeled::Opaque {
                    wrappers,
                    why: "is given no command to run".into(),
                }
            }
            Err(why) => return Peeled::Opaque { wrappers, why },
        }
    }
    Peeled::Command {
        wrappers,
        notes,
        command: rest.to_vec(),
    }
}

/// The index of the wrapped command in `argv` (whose first word is the wrapper).
fn skip(spec: &Spec, argv: &[String]) -> Result<usize, String> {
    let stop = |opt: &str| Err(format!("{opt} is a form rsmld check does not follow"));
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        if spec.name == "env" && a == "-" {
            i += 1;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = format!("--{}", long.split('=').next().unwrap_or_default());
            if spec.stops.contains(&name.as_str()) {
                return stop(&name);
            }
            let takes_next = !long.contains('=') && spec.long_values.contains(&name.as_str());
            i += if takes_next { 2 } else { 1 };
            continue;
        }
        let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) else {
            break;
        };
        // `nice -5`, the old form of `-n 5`.
        if spec.name == "nice" && cluster.bytes().all(|b| b.is_ascii_digit()) {
            i += 1;
            continue;
        }
        i += 1;
        for (at, c) in cluster.char_indices() {
            let opt = format!("-{c}");
            if spec.stops.contains(&opt.as_str()) {
                return stop(&opt);
            }
            if spec.short_values.contains(c) {
                // The value is the rest of the cluster, or else the next argument.
                if at + c.len_utf8() == cluster.len() {
                    i += 1;
                }
                break;
            }
        }
    }
    if spec.assignments {
        while argv.get(i).is_some_and(|a| is_assignment(a)) {
            i += 1;
        }
    }
    match spec.operands {
        Operands::None => {}
        Operands::One => i += 1,
        Operands::OptionalNumber => {
            if argv
                .get(i)
                .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
            {
                i += 1;
            }
        }
    }
    Ok(i)
}

/// `NAME=VALUE` as `env` takes it: a `=` that is not the first character.
fn is_assignment(a: &str) -> bool {
    a.find('=').is_some_and(|i| i > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn command(s: &str) -> Vec<String> {
        match peel(&words(s)) {
            Peeled::Command { command, .. } => command,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn wrappers_are_followed_to_the_command() {
        let want = words("/opt/rsmld --properties F");
        for line in [
            "/opt/rsmld --properties F",
            "/usr/bin/env RUST_LOG=debug /opt/rsmld --properties F",
            "env -i -u HOME --chdir=/ A=1 B= /opt/rsmld --properties F",
            "env -C / -- A=1 /opt/rsmld --properties F",
            "nice -n 5 /opt/rsmld --properties F",
            "nice -n5 /opt/rsmld --properties F",
            "nice -5 /opt/rsmld --properties F",
            "nice --adjustment=5 /opt/rsmld --properties F",
            "ionice -c 2 -n 7 /opt/rsmld --properties F",
            "ionice -c3 /opt/rsmld --properties F",
            "taskset -c 0-3 /opt/rsmld --properties F",
            "taskset 0x3 /opt/rsmld --properties F",
            "chrt -r 10 /opt/rsmld --properties F",
            "chrt --batch 0 /opt/rsmld --properties F",
            "chrt -o /opt/rsmld --properties F",
            "numactl --cpunodebind=0 --membind 0 /opt/rsmld --properties F",
            "numactl -N 0 -l /opt/rsmld --properties F",
            "setpriv --reuid=rsmld --regid rsmld --init-groups --nnp /opt/rsmld --properties F",
            "stdbuf -oL /opt/rsmld --properties F",
            "env RUST_LOG=info nice -n 5 taskset -c 1 /opt/rsmld --properties F",
        ] {
            assert_eq!(command(line), want, "{line}");
        }
    }

    #[test]
    fn a_form_that_runs_no_command_is_opaque() {
        for (line, why) in [
            ("env -S rsmld --properties F", "-S is a form"),
            ("taskset -p 1", "-p is a form"),
            ("chrt -p 5 1", "-p is a form"),
            ("ionice -p 1", "-p is a form"),
            ("nice -n 5", "is given no command"),
            ("env A=1", "is given no command"),
        ] {
            match peel(&words(line)) {
                Peeled::Opaque { why: got, .. } => assert!(got.starts_with(why), "{line}: {got}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        match peel(&words("timeout -s KILL 1h /opt/rsmld")) {
            Peeled::Command {
                wrappers,
                notes,
                command,
            } => {
                assert_eq!(wrappers, ["timeout"]);
                assert_eq!(command, ["/opt/rsmld"]);
                assert!(notes[0].starts_with("timeout ends the record processor after 1h"));
            }
            other => panic!("{other:?}"),
        }
    }
}
