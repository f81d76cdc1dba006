//! The program around the library: command line, process set-up, logging, exit code.
//!
//! **Errors are printed once.** Every error type in rsmld puts its cause in its own message
//! (`worker 0 failed: item …: exec handler child rejected the item: boom`), so the top level
//! prints the message, not the message followed by its `source()` chain, which would repeat
//! every cause.
//!
//! **Exit codes** (README, *Exit codes*): [`EXIT_FAILURE`] when rsmld's own work failed (a
//! handler, the file system, a checkpoint that had to be stored), [`EXIT_USAGE`] for a bad
//! command line, properties file or handler prerequisite (found before stdin is read; clap's
//! own usage errors exit 2 too), [`EXIT_PROTOCOL`] when the daemon broke the protocol. The
//! daemon treats every non-zero exit alike; the codes are for the operator and the supervisor.
//!
//! The `rsmld` binary is `run(Program::rsmld())`. A custom binary is the same program with
//! its own name, version and handlers ([`Program`]): `fn main() -> ExitCode {
//! rsmld::run(program) }` — it gets every flag, the `--properties` file, `check`, the
//! stdout guard and the protocol loop for free (see `examples/json_validator.rs`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::config::{CheckArgs, Cli, Command, GenerateCommand, KplCommand};
use crate::cli::program::Program;
use crate::cli::registry::HandlerDescriptor;
use crate::handler::HandlerFactory;
use crate::telemetry::{Fanout, Sink};

mod logging;

/// Exit code: rsmld's own work failed (handler, file system, checkpoint); also `rsmld check`
/// when it found an error.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: a bad command line, properties file or handler prerequisite.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon broke the protocol.
pub const EXIT_PROTOCOL: u8 = 3;

/// Runs rsmld with the process's arguments. With `handlers`, items go to that factory's
/// handlers (the default handler, `compiled-in`) and `--handler` is not needed; a binary
/// with a name, a version or flags of its own is [`run`] with a [`Program`].
pub fn main(handlers: Option<Arc<dyn HandlerFactory>>) -> ExitCode {
    let program = match handlers {
        None => Program::rsmld(),
        Some(factory) => Program::rsmld().default_handler(HandlerDescriptor::fixed(
            "compiled-in",
            "The handler compiled into this binary",
            factory,
        )),
    };
    run(program)
}

/// Runs `program` with the process's arguments: parses its command line (and
/// `--properties`), answers `--help`, `--version` and the tools (`check`, `kpl`), or runs
/// the record processor on stdin and stdout until the daemon ends the lease. Returns the
/// exit code (see the module docs).
pub fn run(program: Program) -> ExitCode {
    // The exec guard (hidden: not a clap subcommand, never in --help) is this same
    // program started again by the exec handler; it must not parse flags or log.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw
        .get(1)
        .is_some_and(|a| a == crate::process::guard::SUBCOMMAND)
    {
        return crate::process::guard::main(&raw[2..]);
    }
    let argv: Vec<String> = std::env::args().collect();
    // `serve` and `attach` before clap: serve takes every child-mode option after its
    // own, attach none of them.
    match argv.get(1).map(String::as_str) {
        Some("attach") => return crate::attach::main(&argv[2..]),
        Some("serve") => return serve(&program, &argv),
        _ => {}
    }
    let cli = match program.parse_with_properties(argv) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, "-"),
    };
    if let Some(Command::Check(args)) = &cli.command {
        return check(&program, args);
    }
    if let Some(Command::Generate { what }) = &cli.command {
        return generate(&program, what);
    }
    let child = logging::ChildLog::new(cli.run.log_format);
    logging::init(child.clone(), cli.run.log_level);
    match run_processor(cli, &child) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Always visible, whatever RUST_LOG says: this is why the process stops. One
            // line per problem (several prerequisites can fail at once).
            for line in format!("{e}").lines() {
                child.print_error(line);
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A command line that cannot be used: clap's own errors exit as clap prints them; the
/// others (a properties file can have several problems) one `rsmld[PREFIX] ERROR` line
/// each, exit 2.
fn usage_error(e: anyhow::Error, prefix: &str) -> ExitCode {
    match e.downcast::<clap::Error>() {
        Ok(clap_error) => clap_error.exit(),
        Err(e) => {
            for line in format!("{e}").lines() {
                eprintln!("rsmld[{prefix}] ERROR {line}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `rsmld serve --socket PATH [child-mode options]`: one runtime for every attached lease
/// ([`crate::serve`]).
fn serve(program: &Program, argv: &[String]) -> ExitCode {
    // argv without `serve`: the child-mode command line plus serve's own flags.
    let serve_argv = argv[..1].iter().chain(&argv[2..]).cloned().collect();
    let (cli, options) = match crate::serve::parse(program, serve_argv) {
        Ok((cli, _)) if cli.command.is_some() => {
            eprintln!("rsmld[serve] ERROR serve takes record processor options, not a tool");
            return ExitCode::from(EXIT_USAGE);
        }
        Ok(parsed) => parsed,
        Err(e) => return usage_error(e, "serve"),
    };
    let log = logging::ServerLog::new(cli.run.log_format);
    logging::init_server(log.clone(), cli.run.log_level);
    match run_server(cli, &options, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in format!("{e}").lines() {
                log.print_error(line);
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The server's telemetry sink: its log (each lease's lines named by application/shard).
fn server_sink(log: &logging::ServerLog) -> Arc<dyn Sink> {
    Arc::new(log.clone())
}

fn run_server(
    cli: Cli,
    options: &crate::serve::ServeOptions,
    log: &logging::ServerLog,
) -> anyhow::Result<()> {
    cli.run.validate()?;
    if cli.run.metrics_dir.is_some() && options.metrics_listen.is_some() {
        // Each retires an ended lease's series once it has shown them: one reader only.
        return Err(crate::cli::config::ConfigError::Invalid(
            "--metrics-dir and --metrics-listen: choose one (a server scraped over HTTP needs no files)"
                .into(),
        )
        .into());
    }
    let progress_interval = cli.run.progress_interval;
    let (metrics_dir, metrics_interval) = (cli.run.metrics_dir.clone(), cli.run.metrics_interval);
    crate::cli::check::prereq::startup(&cli.run)?;
    let config = cli.run.into_runtime_config()?;
    if !crate::process::reaper::become_subreaper() {
        log::debug!(
            "cannot become a child subreaper; orphaned handler descendants re-parent to init"
        );
    }
    if !crate::process::guard::enable_self() {
        log::debug!("no /proc/self/exe: exec handler children start without a guard");
    }
    // As in child mode: multi-MiB lines mapped on their own, not fragmenting the heap.
    crate::sys::tune_allocator();
    // Many leases' threads: one arena per CPU, not up to eight (their free memory adds up).
    crate::sys::cap_allocator_arenas();
    crate::runtime::start_mapper_threads();
    let mut sink = server_sink(log);
    let mut _metrics_listener = None;
    if let Some(addr) = options.metrics_listen {
        let metrics = Arc::new(crate::metrics::MetricsSink::new()?);
        _metrics_listener = Some(
            crate::http::start(addr, metrics.clone())
                .map_err(|e| crate::cli::config::ConfigError::Invalid(e.to_string()))?,
        );
        sink = Arc::new(Fanout(vec![sink, metrics]));
    }
    let mut metrics_files = None;
    if let Some(dir) = &metrics_dir {
        // One file per lease for node_exporter's textfile collector, as in child mode.
        let metrics = Arc::new(crate::metrics::MetricsSink::new()?);
        metrics_files = Some(crate::metrics::dir::start(
            dir,
            metrics_interval,
            metrics.clone(),
        )?);
        sink = Arc::new(Fanout(vec![sink, metrics]));
    }
    let listener = crate::serve::listen(&options.socket)
        .map_err(|e| crate::cli::config::ConfigError::Invalid(e.to_string()))?;
    let runtime = crate::runtime::Runtime::start(config, sink)?;
    let progress = log.start_progress(progress_interval);
    log::info!("serving leases on {}", options.socket.display());
    let hook: crate::serve::AttachHook = {
        let log = log.clone();
        Arc::new(move |serial, hello| log.attach_stream(serial, hello.map(|h| h.stream.as_str())))
    };
    let stopped = crate::serve::serve(listener, runtime, options, hook)?;
    drop(progress);
    if let Some(writer) = metrics_files {
        writer.stop();
    }
    let swept = crate::process::reaper::sweep();
    if swept > 0 {
        log::warn!("killed {swept} handler process(es) still running at exit");
    }
    if stopped.workers_lost > 0 {
        anyhow::bail!(
            "stopped after losing {} worker(s) to handler calls that could not be interrupted",
            stopped.workers_lost
        );
    }
    if !stopped.drained {
        anyhow::bail!("leases were still attached when the grace period ended");
    }
    Ok(())
}

/// `rsmld check`: the report on stderr (stdout stays free, as in every rsmld mode), one
/// line per finding, or one `ok` line; exit 1 on any error.
fn check(program: &Program, args: &CheckArgs) -> ExitCode {
    let kcl: crate::cli::kcl::Kcl = args.kcl.into();
    match crate::cli::check::check_file_for(program, &args.properties, kcl) {
        Ok(report) => {
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            if report.diagnostics.is_empty() {
                eprintln!("{}: ok for {}", args.properties.display(), kcl.label());
            }
            if report.has_errors() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{}: error: {e}", args.properties.display());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `rsmld generate`: a completion script or the man page on stdout (stdout is free here,
/// as in `rsmld kpl`: no protocol runs), both from the same clap definition as the parser,
/// so they never drift from the flags.
fn generate(program: &Program, what: &GenerateCommand) -> ExitCode {
    let mut cmd = program.command();
    #[expect(clippy::disallowed_methods, reason = "the script is the output")]
    let mut out = std::io::stdout().lock();
    let written = match what {
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, program.name(), &mut script);
            out.write_all(&script).and_then(|()| out.flush())
        }
        GenerateCommand::Man => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .and_then(|()| out.flush()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsmld[-] ERROR cannot write to stdout: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The exit code for an error that stopped the run (see the module docs).
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(d) = e.downcast_ref::<crate::lease::LeaseError>() {
        return if d.is_protocol_violation() {
            EXIT_PROTOCOL
        } else {
            EXIT_FAILURE
        };
    }
    if e.downcast_ref::<crate::cli::config::ConfigError>()
        .is_some()
        || e.downcast_ref::<crate::cli::check::prereq::PrerequisitesError>()
            .is_some()
    {
        return EXIT_USAGE;
    }
    EXIT_FAILURE
}

fn run_processor(cli: Cli, child: &logging::ChildLog) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Kpl { command }) => {
            let stdin = std::io::stdin().lock();
            #[expect(clippy::disallowed_methods, reason = "the lines are the output")]
            let stdout = std::io::stdout().lock();
            match command {
                KplCommand::Decode => crate::kpl::cli::decode_lines(stdin, stdout)?,
                KplCommand::Encode { max_bytes } => {
                    crate::kpl::cli::encode_lines(stdin, stdout, max_bytes)?
                }
            }
            Ok(())
        }
        // Answered by `main` before logging starts.
        Some(Command::Check(_)) | Some(Command::Generate { .. }) => Ok(()),
        None => {
            // Fail before the first record: before stdin is read, so before `initialize` is
            // answered and the daemon counts the lease as served.
            cli.run.validate()?;
            crate::cli::check::prereq::startup(&cli.run)?;
            let metrics_dir = cli.run.metrics_dir.clone();
            let (metrics_interval, progress_interval) =
                (cli.run.metrics_interval, cli.run.progress_interval);
            let config = cli.run.into_runtime_config()?;
            crate::sys::tune_allocator();
            crate::sys::ignore_termination_signals();
            if !crate::process::reaper::become_subreaper() {
                log::debug!("cannot become a child subreaper; orphaned handler descendants re-parent to init");
            }
            if !crate::process::guard::enable_self() {
                log::debug!("no /proc/self/exe: exec handler children start without a guard");
            }
            if let Some(size) = crate::sys::enlarge_stdin_pipe(4 << 20) {
                log::debug!("stdin pipe enlarged to {size} bytes");
            }
            let protocol_out = crate::sys::guard_stdout()?;
            // Child mode: a runtime with one lease, on stdin and stdout.
            let mut sink: Arc<dyn Sink> = Arc::new(child.clone());
            let mut metrics_files = None;
            if let Some(dir) = &metrics_dir {
                let metrics = Arc::new(crate::metrics::MetricsSink::new()?);
                sink = Arc::new(Fanout(vec![sink, metrics.clone()]));
                metrics_files = Some(crate::metrics::dir::start(dir, metrics_interval, metrics)?);
            }
            let progress = child.start_progress(progress_interval);
            let runtime = crate::runtime::Runtime::new(config, sink);
            let result = runtime.run_child(std::io::stdin(), protocol_out);
            drop(progress);
            // The lease's file goes with it (and any file the writer wrote).
            if let Some(writer) = metrics_files {
                writer.stop();
            }
            // Whatever the outcome, no handler process outlives rsmld.
            let swept = crate::process::reaper::sweep();
            if swept > 0 {
                log::warn!("killed {swept} handler process(es) still running at exit");
            }
            let stats = result?;
            log::info!(
                "exiting: {} records, {} items dispatched, {} completed, {} checkpoints, {} duplicates skipped",
                stats.records,
                stats.items,
                stats.completed,
                stats.checkpoints,
                stats.duplicates
            );
            Ok(())
        }
    }
}
