//! Deterministic crash points for the crash tests (`AUTOPRUNE_FAILPOINT`).

/// Crash tests kill a search at exact points instead of at a random time: the
/// `AUTOPRUNE_FAILPOINT` variable holds `STAGE:EPISODE` pairs (comma-separated), where STAGE
/// is `logged` (the episode's log line is written, its events and best.json not yet) or
/// `saved` (best.json is written, the events not yet flushed).
pub fn failpoints() -> Vec<(String, usize)> {
    std::env::var("AUTOPRUNE_FAILPOINT")
        .unwrap_or_default()
        .split(',')
        .filter_map(|point| {
            let (stage, episode) = point.split_once(':')?;
            Some((stage.trim().to_string(), episode.trim().parse().ok()?))
        })
        .collect()
}

/// Kills the process (SIGKILL, as a crash would) at a failpoint that names this stage and
/// episode.
pub fn failpoint(points: &[(String, usize)], stage: &str, episode: usize) {
    if points.iter().any(|(s, e)| s == stage && *e == episode) {
        // SAFETY: raising a signal on the current process has no memory-safety conditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

#[cfg(feature = "mpi")]
/// Faults of an MPI worker for the fault tests, at the episode it is about to score:
/// `worker-error:E` fails the evaluation, `worker-panic:E` panics, `worker-hang:E` never
/// answers.
pub fn worker_failpoint(episode: usize) -> crate::error::Result<()> {
    let points = failpoints();
    let at = |stage: &str| points.iter().any(|(s, e)| s == stage && *e == episode);
    if at("worker-panic") {
        panic!("failpoint worker-panic at episode {episode}");
    }
    if at("worker-hang") {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if at("worker-error") {
        return Err(crate::error::Error::Distributed(format!(
            "failpoint worker-error at episode {episode}"
        )));
    }
    Ok(())
}
