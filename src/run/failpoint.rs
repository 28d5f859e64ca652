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
