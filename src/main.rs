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
    let command = match cli::Cli::try_parse() {
        Ok(cli) => cli.command,
        Err(error) => usage_error(error),
    };
    if let Err(error) = command.run() {
        eprintln!("error: {}", one_line(&error));
        let interrupted = matches!(
            error.downcast_ref::<autoprune::Error>(),
            Some(autoprune::Error::Interrupted { .. })
        );
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

/// Help and the version print as clap prints them; a usage error is one line with a pointer
/// to the help, and exits with 2 as clap's own do.
fn usage_error(error: clap::Error) -> ! {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
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
    std::process::exit(2);
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
