//! Policy evaluations spread over MPI ranks (cargo feature `mpi`).
//!
//! Rank 0 runs the command: the agent, the run folder, TensorBoard and progress are its
//! alone. Ranks 1..N−1 are workers: they build the evaluator of every [`Recipe`] rank 0 sends
//! them and score the jobs it hands out, one at a time. Results reach the loop in job order
//! ([`Scorer::score`]), so a run does not depend on N.
//!
//! Faults end the whole job: an error or a panic on any rank prints one line naming the rank
//! and calls `MPI_Abort` (a rank that returns through `MPI_Finalize` while others wait would
//! hang the job). A job that takes longer than the deadline aborts the job from rank 0,
//! naming the worker. Waiting is a probe and a short sleep, never a busy blocking receive.
//! Workers ignore SIGINT and SIGTERM: rank 0 stops cleanly after the episodes in flight and
//! then releases them.

use super::pool::{Job, JobResult, Recipe, Scorer};
use crate::error::{Error, Result};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Messages from rank 0 to a worker.
#[derive(Serialize, Deserialize)]
enum Order {
    /// Build the evaluator of this recipe under this handle, then answer `Ready`.
    Prepare { handle: usize, recipe: Box<Recipe> },
    /// Score this job with the evaluator of its recipe's handle, then answer `Scored`.
    Score(Job),
    /// Finish: no more orders.
    Stop,
}

/// Messages from a worker to rank 0.
#[derive(Serialize, Deserialize)]
enum Answer {
    Ready,
    Scored(Box<JobResult>),
}

/// How long a waiting rank sleeps between probes: from `POLL_MIN`, doubling up to `POLL_MAX`
/// while nothing comes (a message that follows another is seen within microseconds; an idle
/// rank wakes 1,000 times a second and costs no core).
const POLL_MIN: Duration = Duration::from_micros(20);
const POLL_MAX: Duration = Duration::from_millis(1);
/// How often rank 0 probes around the time a job is due.
const POLL_FINE: Duration = Duration::from_micros(100);
/// How long a worker that has just answered probes without sleeping (yielding the core
/// between probes) for its next order, which rank 0 sends as soon as it sees the answer.
const SPIN: Duration = Duration::from_micros(500);
/// The timer slack of every rank: how late the kernel may wake a sleeping rank (Linux's
/// default, 50 µs, would stretch each 20–100 µs probe sleep by half or more).
const TIMER_SLACK_NS: libc::c_ulong = 1_000;
/// The longest rank 0 sleeps at once while jobs it expects to take longer are in flight.
const POLL_LONG: Duration = Duration::from_millis(50);

/// How a worker scores the jobs of one recipe.
pub type Evaluate = Box<dyn FnMut(&Job) -> Result<JobResult>>;

/// This process's place in an MPI job.
pub struct Cluster {
    /// Finalizes MPI when dropped (after the workers were told to stop).
    _universe: Universe,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// The recipes prepared so far (their handle is their position).
    prepared: Vec<Recipe>,
    /// How long one evaluation may take before the job is aborted.
    deadline: Duration,
    /// The running mean of how long a worker takes to score a job.
    expected: Duration,
    /// The running mean of how far a job's time lies from `expected`.
    spread: Duration,
}

impl Cluster {
    /// Joins the MPI job this process was launched in; None when it was not launched by an
    /// MPI launcher (or MPI cannot start), so that one process behaves exactly as without
    /// MPI. A job of one rank is joined too (it scores on rank 0).
    pub fn join() -> Option<Cluster> {
        super::pool::launched_ranks()?;
        let universe = mpi::initialize()?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // SAFETY: PR_SET_TIMERSLACK takes a value and touches no memory of ours; a kernel
        // that refuses it leaves the default slack, which only makes waits less precise.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS);
        }
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let at = info
                .location()
                .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                .unwrap_or_default();
            let line = format!("{message}{at}").replace('\n', " ");
            error_line(&format!("rank {rank}: panicked: {line}"));
            SimpleCommunicator::world().abort(101);
        }));
        Some(Cluster {
            _universe: universe,
            world,
            rank,
            size,
            prepared: Vec::new(),
            deadline: Duration::from_secs(3600),
            expected: Duration::ZERO,
            spread: Duration::ZERO,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Ends the whole job at once after printing `line` (every rank, every error path).
    pub fn abort(&self, line: &str, code: i32) -> ! {
        error_line(&format!("rank {}: {line}", self.rank));
        self.world.abort(code)
    }

    /// Tells the workers there is no more work (rank 0, on a clean exit or an interrupt);
    /// MPI is finalized when the cluster is dropped.
    pub fn release_workers(&self) {
        if self.rank != 0 {
            return;
        }
        for worker in 1..self.size {
            self.send(worker, &Order::Stop);
        }
    }

    fn send<T: Serialize>(&self, rank: usize, message: &T) {
        let bytes = match serde_json::to_vec(message) {
            Ok(bytes) => bytes,
            Err(e) => self.abort(&format!("cannot encode a message: {e}"), 1),
        };
        self.world.process_at_rank(rank as i32).send(&bytes[..]);
    }

    /// The next message from any rank, with its sender (probing with a short sleep); None
    /// when none came within `wait`. The first `spin` of the wait probes without sleeping
    /// (yielding the core between probes), for a message that is about to come.
    fn receive<T: for<'de> Deserialize<'de>>(
        &self,
        wait: Duration,
        spin: Duration,
    ) -> Option<(usize, T)> {
        let started = Instant::now();
        let mut poll = POLL_MIN;
        loop {
            if let Some(message) = self.try_receive() {
                return Some(message);
            }
            let waited = started.elapsed();
            if waited >= wait {
                return None;
            }
            if waited < spin {
                std::thread::yield_now();
                continue;
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// The message waiting from any rank, with its sender, if there is one (one probe).
    fn try_receive<T: for<'de> Deserialize<'de>>(&self) -> Option<(usize, T)> {
        let probed = self.world.any_process().immediate_matched_probe()?;
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        let from = status.source_rank() as usize;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some((from, value)),
            Err(e) => self.abort(&format!("unreadable message from rank {from}: {e}"), 1),
        }
    }

    /// A worker's life: build the evaluator of every recipe rank 0 sends and score jobs until
    /// it says stop. Any error aborts the job with one line naming this rank.
    pub fn serve(&mut self) {
        self.serve_with(&mut |recipe, cluster| {
            let device = worker_device(&recipe.device, cluster)?;
            let mut evaluator = recipe.build(device)?;
            Ok(Box::new(move |job: &Job| {
                super::failpoint::worker_failpoint(job.episode)?;
                super::pool::score_job(&mut evaluator, job)
            }))
        })
    }

    /// [`Self::serve`] with another way of turning a recipe into a scorer (benchmarks score
    /// with an evaluator of fixed cost).
    pub fn serve_with(&mut self, build: &mut dyn FnMut(&Recipe, &Cluster) -> Result<Evaluate>) {
        ignore_termination_signals();
        let mut evaluators: Vec<Option<Evaluate>> = Vec::new();
        loop {
            let forever = Duration::from_secs(3600 * 24 * 365);
            let Some((_, order)) = self.receive::<Order>(forever, SPIN) else {
                continue;
            };
            match order {
                Order::Stop => return,
                Order::Prepare { handle, recipe } => {
                    let evaluator = match build(&recipe, self) {
                        Ok(evaluator) => evaluator,
                        Err(e) => self.abort(&e.to_string(), 1),
                    };
                    if evaluators.len() <= handle {
                        evaluators.resize_with(handle + 1, || None);
                    }
                    evaluators[handle] = Some(evaluator);
                    self.send(0, &Answer::Ready);
                }
                Order::Score(job) => {
                    let handle = job.recipe;
                    let Some(evaluator) = evaluators.get_mut(handle).and_then(Option::as_mut)
                    else {
                        self.abort(&format!("no evaluator prepared under handle {handle}"), 1)
                    };
                    match evaluator(&job) {
                        Ok(result) => self.send(0, &Answer::Scored(Box::new(result))),
                        Err(e) => self.abort(&format!("scoring episode {}: {e}", job.episode), 1),
                    }
                }
            }
        }
    }
}

/// The device a worker evaluates on: the CPU when rank 0 asked for it, else (CUDA asked for,
/// or `auto` with CUDA present) the GPU of the worker's node-local index among the visible
/// ones, so that `CUDA_VISIBLE_DEVICES` set per task (`srun --gpus-per-task`) is honoured.
fn worker_device(asked: &str, cluster: &Cluster) -> Result<tch::Device> {
    let device = crate::device::parse_device(asked)?;
    if device == tch::Device::Cpu {
        return Ok(device);
    }
    let visible = tch::Cuda::device_count().max(1) as usize;
    let node = cluster
        .world
        .split_shared(cluster.rank as i32)
        .rank()
        .max(0) as usize;
    Ok(tch::Device::Cuda(node % visible))
}

/// Workers leave SIGINT and SIGTERM to rank 0, which stops cleanly and then releases them.
fn ignore_termination_signals() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety conditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

impl Scorer for Cluster {
    fn workers(&self) -> usize {
        self.size.saturating_sub(1).max(1)
    }

    fn prepare(&mut self, recipe: &Recipe) -> Result<usize> {
        if let Some(handle) = self.prepared.iter().position(|r| r == recipe) {
            return Ok(handle);
        }
        let handle = self.prepared.len();
        self.prepared.push(recipe.clone());
        let order = Order::Prepare {
            handle,
            recipe: Box::new(recipe.clone()),
        };
        for worker in 1..self.size {
            self.send(worker, &order);
        }
        let started = Instant::now();
        let mut ready = vec![false; self.size];
        ready[0] = true;
        while ready.iter().any(|r| !r) {
            let left = self.deadline.saturating_sub(started.elapsed());
            match self.receive::<Answer>(left, Duration::ZERO) {
                Some((from, Answer::Ready)) => ready[from] = true,
                Some((from, Answer::Scored(_))) => {
                    self.abort(&format!("rank {from} answered out of turn"), 1)
                }
                None => {
                    let late = ready.iter().position(|r| !r).unwrap_or(0);
                    self.abort(
                        &format!(
                            "rank {late} did not build the evaluator of {} within the deadline of {:.0} s",
                            recipe.spec.name,
                            self.deadline.as_secs_f64()
                        ),
                        1,
                    )
                }
            }
        }
        Ok(handle)
    }

    fn set_deadline(&mut self, seconds: f64) {
        self.deadline = Duration::from_secs_f64(seconds.max(0.001));
    }

    fn score(
        &mut self,
        jobs: &[Job],
        stop: &AtomicBool,
        each: &mut dyn FnMut(usize, JobResult) -> Result<()>,
    ) -> Result<usize> {
        if self.size < 2 {
            return Err(Error::Distributed(
                "a job of one rank scores on rank 0; there are no workers to hand jobs to".into(),
            ));
        }
        let mut next = 0;
        let mut handed = 0;
        let mut results: Vec<Option<JobResult>> = vec![None; jobs.len()];
        // Per worker: the job it scores and when it was handed out.
        let mut busy: Vec<Option<(usize, Instant)>> = vec![None; self.size];
        let mut poll = POLL_MIN;
        loop {
            if !stop.load(Ordering::SeqCst) {
                for (worker, slot) in busy.iter_mut().enumerate().skip(1) {
                    if slot.is_none() && next < jobs.len() {
                        self.send(worker, &Order::Score(jobs[next].clone()));
                        *slot = Some((next, Instant::now()));
                        next += 1;
                    }
                }
            }
            if busy.iter().all(Option::is_none) {
                return Ok(handed);
            }
            match self.try_receive::<Answer>() {
                Some((from, Answer::Scored(result))) => {
                    let Some((position, since)) = busy.get_mut(from).and_then(Option::take) else {
                        self.abort(&format!("rank {from} answered a job it was not given"), 1)
                    };
                    // How long the worker computed (not the round trip, which would feed
                    // rank 0's own waiting back into its expectation).
                    let took = Duration::try_from_secs_f64(result.score.seconds)
                        .unwrap_or_else(|_| since.elapsed());
                    if self.expected.is_zero() {
                        self.expected = took;
                    } else {
                        let off = took.abs_diff(self.expected);
                        self.spread = self.spread.mul_f64(0.8) + off.mul_f64(0.2);
                        self.expected = self.expected.mul_f64(0.8) + took.mul_f64(0.2);
                    }
                    poll = POLL_MIN;
                    results[position] = Some(*result);
                    while handed < jobs.len() {
                        let Some(result) = results[handed].take() else {
                            break;
                        };
                        each(handed, result)?;
                        handed += 1;
                    }
                }
                Some((from, Answer::Ready)) => {
                    self.abort(&format!("rank {from} answered out of turn"), 1)
                }
                None => {
                    // Sleep until the first job in flight is due (by the running mean of
                    // how long jobs take, less twice their spread), probe often for a
                    // while around that time, then in growing steps: an answer is seen
                    // soon after it comes, and rank 0 does not wake often while jobs run.
                    let now = Instant::now();
                    let early = (self.spread * 2 + POLL_MAX).min(self.expected.mul_f64(0.1));
                    let due = busy
                        .iter()
                        .flatten()
                        .map(|(_, since)| *since + self.expected.saturating_sub(early))
                        .min();
                    let window = (early + self.spread * 2 + POLL_MAX)
                        .min(self.expected.mul_f64(0.2))
                        .max(POLL_MAX);
                    let nap = match due {
                        Some(due) if due > now => (due - now).min(POLL_LONG),
                        Some(due) if now < due + window => POLL_FINE,
                        _ => {
                            let nap = poll;
                            poll = (poll * 2).min(POLL_MAX);
                            nap
                        }
                    };
                    std::thread::sleep(nap);
                }
            }
            for (worker, job) in busy.iter().enumerate() {
                if let Some((position, since)) = job {
                    if since.elapsed() > self.deadline {
                        self.abort(
                            &format!(
                                "rank {worker} has scored episode {} for longer than the deadline of {:.0} s (eval_deadline); it is hung or the deadline is too short",
                                jobs[*position].episode,
                                self.deadline.as_secs_f64()
                            ),
                            1,
                        );
                    }
                }
            }
        }
    }
}

/// Writes `error: <line>` to stderr in one write, so that the launcher's own messages (Open
/// MPI's abort notice) cannot land inside the line, as they can between the pieces of a
/// formatted print.
fn error_line(line: &str) {
    use std::io::Write;
    let text = format!("error: {line}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
