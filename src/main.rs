//! The `autoprune` command line: parse, dispatch to `cli/<command>.rs`, and map errors to
//! exit codes (1, or 130 for an interrupt).

mod cli;

use clap::Parser;

fn main() {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`autoprune graph --json | head`) instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let command = cli::Cli::parse().command;
    if let Err(error) = command.run() {
        eprintln!("error: {}", one_line(&error));
        let interrupted = matches!(
            error.downcast_ref::<autoprune::Error>(),
            Some(autoprune::Error::Interrupted { .. })
        );
        std::process::exit(if interrupted { 130 } else { 1 });
    }
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
