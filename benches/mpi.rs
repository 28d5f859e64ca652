//! Scale-out over MPI, measured in one run (`cargo bench --features mpi --bench mpi`):
//!
//! - policies per second on the real evaluator (fmnist-vgg, 500 validation samples, one
//!   libtorch thread per rank) with 1, 2 and 3 ranks;
//! - with a synthetic evaluator of fixed cost (100 ms, sleeping), the parallel efficiency
//!   from 1 to 32 workers (oversubscribed), the protocol's overhead per evaluation, and rank
//!   0's CPU use while it waits, and what part of the overhead is fixed (8 against 40
//!   evaluations per worker: what each evaluation past the first adds);
//! - the round trip of one evaluation that costs nothing (the protocol alone).
//!
//! The bench launches itself under `mpirun` once per configuration; each job's rank 0 prints
//! one JSON line, which this process gathers into tables. `-- --synthetic` leaves out the
//! real evaluator's rows (minutes) and measures the protocol alone.

use autoprune::config::EnvSpec;
use autoprune::data::SplitName;
use autoprune::eval::{LayerKeep, Score};
use autoprune::run::mpi::{Cluster, Evaluate};
use autoprune::run::pool::{
    launched_ranks, score_job, score_locally, Job, JobResult, Recipe, Rescore, Scorer,
};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const MODE: &str = "AUTOPRUNE_BENCH_MODE";

fn main() {
    if launched_ranks().is_some() {
        return inside_job();
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let job = |ranks: usize, mode: &str| -> serde_json::Value {
        let out = Command::new("mpirun")
            .args(["--oversubscribe", "-np", &ranks.to_string()])
            .arg(std::env::current_exe().expect("the bench's own path"))
            .current_dir(repo)
            .env(MODE, mode)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl", "self,vader")
            .output()
            .expect("mpirun runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        match line.map(serde_json::from_str) {
            Some(Ok(value)) => value,
            _ => panic!(
                "mpirun -np {ranks} ({mode}) printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };

    let synthetic_only = std::env::args().any(|a| a == "--synthetic");
    if !synthetic_only {
        println!("real evaluator: fmnist-vgg, 500 validation samples, 1 libtorch thread per rank");
        println!("| ranks | evaluating | policies per second | speedup |");
        println!("|---|---|---|---|");
    }
    let mut one = 0.0;
    for ranks in [1, 2, 3].into_iter().filter(|_| !synthetic_only) {
        let r = job(ranks, "real:24");
        let rate = r["policies"].as_f64().unwrap_or(0.0) / r["seconds"].as_f64().unwrap_or(1.0);
        if ranks == 1 {
            one = rate;
        }
        let evaluating = match ranks {
            1 => "rank 0".to_string(),
            2 => "1 worker".to_string(),
            _ => format!("{} workers", ranks - 1),
        };
        println!(
            "| {ranks} | {evaluating} | {rate:.2} | {:.2} |",
            rate / one.max(1e-9)
        );
    }

    println!();
    println!(
        "synthetic evaluator of fixed cost (100 ms), 8 evaluations per worker; the last column"
    );
    println!("from a second run of 40 per worker: what each evaluation past the first 8 adds");
    println!("| workers | seconds | efficiency | overhead per evaluation (ms) | rank 0 CPU while waiting | overhead per evaluation past the first 8 (ms) |");
    println!("|---|---|---|---|---|---|");
    for workers in [1, 2, 4, 8, 16, 32] {
        let r = job(workers + 1, &format!("synthetic:100:{}", 8 * workers));
        let seconds = r["seconds"].as_f64().unwrap_or(f64::NAN);
        let jobs = r["jobs"].as_f64().unwrap_or(f64::NAN);
        let ideal = jobs * 0.1 / workers as f64;
        let overhead = (seconds - ideal) * workers as f64 / jobs * 1000.0;
        // 32 more evaluations per worker take 3.2 s at no overhead.
        let longer = job(workers + 1, &format!("synthetic:100:{}", 40 * workers));
        let extra = longer["seconds"].as_f64().unwrap_or(f64::NAN) - seconds;
        let marginal = (extra - 3.2) / 32.0 * 1000.0;
        println!(
            "| {workers} | {seconds:.3} | {:.3} | {overhead:.2} | {:.1}% | {marginal:.2} |",
            ideal / seconds,
            100.0 * r["cpu_share"].as_f64().unwrap_or(f64::NAN)
        );
    }

    // The table's overhead holds a fixed part (the first job reaches an idle worker, and
    // rank 0 learns how long jobs take, at the slower idle probing); the difference between
    // a short and a long run of one worker is the part each evaluation adds.
    let run = |count: usize| {
        let r = job(2, &format!("synthetic:100:{count}"));
        r["seconds"].as_f64().unwrap_or(f64::NAN) - count as f64 * 0.1
    };
    let (short, long) = (run(8), run(40));
    println!();
    println!(
        "1 worker, 8 and 40 evaluations of 100 ms: {:.2} ms of overhead per evaluation past the first ones, {:.2} ms fixed",
        (long - short) / 32.0 * 1000.0,
        (short - 8.0 * (long - short) / 32.0) * 1000.0
    );

    println!();
    let r = job(2, "synthetic:0:500");
    println!(
        "protocol alone (an evaluation that costs nothing, 1 worker, 500 evaluations): {:.3} ms per evaluation, rank 0 CPU {:.0}%",
        r["seconds"].as_f64().unwrap_or(f64::NAN) / 500.0 * 1000.0,
        100.0 * r["cpu_share"].as_f64().unwrap_or(f64::NAN)
    );
}

/// One process of a job: rank 0 measures and prints one JSON line; the others serve.
fn inside_job() {
    let mode = std::env::var(MODE).unwrap_or_default();
    let mut cluster = Cluster::join().expect("MPI starts");
    let parts: Vec<&str> = mode.split(':').collect();
    let (real, cost_ms, count) = match parts.as_slice() {
        ["real", n] => (true, 0, n.parse().unwrap_or(24)),
        ["synthetic", ms, n] => (false, ms.parse().unwrap_or(100), n.parse().unwrap_or(8)),
        _ => panic!("{MODE} is `real:N` or `synthetic:MS:N`, not `{mode}`"),
    };
    if cluster.rank() > 0 {
        if real {
            cluster.serve();
        } else {
            cluster.serve_with(&mut |_, _| Ok(fixed_cost(cost_ms)));
        }
        return;
    }
    let spec_path = if real {
        "envs/fmnist-vgg.toml"
    } else {
        "envs/synthetic-mlp.toml"
    };
    let spec = EnvSpec::load(std::path::Path::new(spec_path)).expect("the env loads");
    let recipe = Recipe {
        spec: spec.clone(),
        spec_path: spec.path.clone(),
        seed: 0,
        eval_samples: Some(500),
        threads: Some(1),
        device: "cpu".into(),
        pruningnet: None,
    };
    // The policies: random keep ratios, one per unit of the real model.
    let mut local = real.then(|| {
        recipe
            .build(tch::Device::Cpu)
            .expect("the evaluator builds")
    });
    let units = local.as_ref().map_or(20, |e| e.costs().units().len());
    let jobs: Vec<Job> = (0..count)
        .map(|i| Job {
            recipe: 0,
            episode: i,
            policy: (0..units)
                .map(|u| 0.1 + 0.9 * (((i * 31 + u * 17) % 97) as f64 / 96.0))
                .collect(),
            rescore: Rescore::Never,
        })
        .collect();
    let never = AtomicBool::new(false);
    let mut received = 0;
    let mut each = |_: usize, _: JobResult| {
        received += 1;
        Ok(())
    };
    let (cpu, started);
    if cluster.size() > 1 {
        let handle = cluster.prepare(&recipe).expect("workers prepare");
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|j| Job {
                recipe: handle,
                ..j
            })
            .collect();
        cpu = cpu_seconds();
        started = Instant::now();
        cluster.score(&jobs, &never, &mut each).expect("jobs score");
    } else {
        let evaluator = local
            .as_mut()
            .expect("one rank scores on the real evaluator");
        cpu = cpu_seconds();
        started = Instant::now();
        score_locally(
            &mut |job| score_job(evaluator, job),
            &jobs,
            &never,
            &mut each,
        )
        .expect("jobs score");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_share = (cpu_seconds() - cpu) / seconds;
    println!(
        "{}",
        json!({"ranks": cluster.size(), "jobs": received, "policies": received, "seconds": seconds, "cpu_share": cpu_share})
    );
    cluster.release_workers();
}

/// A scorer that sleeps `ms` and returns a score of 20 layers (what a small model's is).
fn fixed_cost(ms: u64) -> Evaluate {
    Box::new(move |job: &Job| {
        std::thread::sleep(Duration::from_millis(ms));
        let layers = job
            .policy
            .iter()
            .enumerate()
            .map(|(i, &keep)| LayerKeep {
                name: format!("layer{i}"),
                keep,
            })
            .collect();
        Ok(JobResult {
            score: Score {
                accuracy: 0.5,
                loss: 1.0,
                params_kept: 0.5,
                flops_kept: 0.5,
                params: 1000,
                flops: 1000,
                reward: 0.5,
                perplexity: None,
                layers,
                split: SplitName::Val,
                seconds: ms as f64 / 1000.0,
                latency: None,
            },
            whole: None,
        })
    })
}

/// CPU seconds this process has used (user and system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}
