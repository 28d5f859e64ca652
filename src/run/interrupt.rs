//! Ctrl-C, one way for every long command: the first press asks the loop to stop after the
//! unit in flight (episode, iteration, training step), what is written stays, and the command
//! ends with [`crate::Error::Interrupted`] (exit 130) naming the resume command where there
//! is one. A second press stops at once; every finished unit is already on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static STOP: AtomicBool = AtomicBool::new(false);
static ARMED: Once = Once::new();

/// Installs the Ctrl-C handler (once per process) and returns the flag it sets.
pub fn arm() -> &'static AtomicBool {
    ARMED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after the step in flight (Ctrl-C again to stop at once)");
        });
    });
    &STOP
}
