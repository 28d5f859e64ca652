//! The `autoprune` command line: parse, dispatch to `cli/<command>.rs`, and map errors to
//! exit codes (1, or 130 for an interrupt).

mod cli;

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`autoprune graph --json | head`) instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    #[cfg(feature = "mpi")]
    let mut cluster = autoprune::run::mpi::Cluster::join();
    #[cfg(feature = "mpi")]
    if let Some(worker) = cluster.as_mut().filter(|c| c.rank() > 0) {
        worker.serve();
        return;
    }
    #[cfg(feature = "mpi")]
    let (code, error) = match cluster.as_mut().filter(|c| c.size() > 1) {
        Some(cluster) => run(Some(cluster)),
        None => run(None),
    };
    #[cfg(not(feature = "mpi"))]
    let (code, error) = match autoprune::run::pool::launched_ranks() {
        // N copies of one command would each run it whole, into the same files.
        Some(ranks) if ranks > 1 => (
            2,
            Some(format!(
                "started as one of {ranks} MPI processes, but this build has no MPI support; build with `cargo build --release --features mpi` (or run one process)"
            )),
        ),
        _ => run(None),
    };
    // Under MPI the workers are released and MPI finalized (the cluster dropped) first; a
    // failure ends the whole job at once (workers may be scoring), with the error as its line.
    #[cfg(feature = "mpi")]
    if let Some(cluster) = cluster {
        if let (1, Some(line)) = (code, &error) {
            cluster.abort(line, 1);
        }
        cluster.release_workers();
    }
    if let Some(line) = error {
        eprintln!("error: {line}");
    }
    if code != 0 {
        std::process::exit(code);
    }
}

/// Parses the command line and runs the command: the exit code (0, 1, 2 for usage, 130 for
/// an interrupt) and the error as one line, if any.
fn run(scorer: Option<&mut dyn autoprune::run::pool::Scorer>) -> (i32, Option<String>) {
    let command = match cli::Cli::try_parse() {
        Ok(cli) => cli.command,
        Err(error) => return (usage_error(error), None),
    };
    let Err(error) = command.run(scorer) else {
        return (0, None);
    };
    let interrupted = matches!(
        error.downcast_ref::<autoprune::Error>(),
        Some(autoprune::Error::Interrupted { .. })
    );
    (if interrupted { 130 } else { 1 }, Some(one_line(&error)))
}

/// Help and the version print as clap prints them (exit code 0); a usage error is one line
/// with a pointer to the help, and exits with 2 as clap's own do.
fn usage_error(error: clap::Error) -> i32 {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return error.exit_code();
    }
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // The choices of a value are worth keeping; usage and "try --help" lines are not.
    if let Some(choices) = lines.find(|l| l.starts_with("[possible values:")) {
        line = format!("{line} {choices}");
    }
    // The command the user meant, when the first argument names one.
    let command = std::env::args()
        .nth(1)
        .filter(|a| cli::Cli::command_names().contains(a))
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    eprintln!("error: {line} (see autoprune{command} --help)");
    2
}

/// One line: the library's errors already say what, where and how to fix it. A cause whose
/// text is already in the line (an I/O error under its path) is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(|e| e.to_string()) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line
}
