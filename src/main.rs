//! The `autoprune` command line: parse, build, call the library, print.

use anyhow::{Context, Result};
use autoprune::agents::AgentKind;
use autoprune::data;
use autoprune::device::{device_name, parse_device, seed_torch};
use autoprune::env::EnvSpec;
use autoprune::eval::{EvalConfig, Evaluator, Score};
use autoprune::graph::ModelGraph;
use autoprune::model::{load_or_train, train, GraphNet};
use autoprune::policy::{files_fingerprint, fingerprint, now_rfc3339, PolicyFile, SCHEMA};
use autoprune::prune::{allocate, slim, Method};
use autoprune::runlog::Progress;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "autoprune",
    version,
    about = "Learns layer-wise sparsity policies for neural networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that run a model.
#[derive(Args)]
struct RunOptions {
    /// auto, cpu, cuda or cuda:N (auto picks CUDA when available).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Threads libtorch may use on the CPU (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Seeds shuffling, initialisation and every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Trains the env's model from scratch and saves its checkpoint.
    Pretrain {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        /// Overrides the env's [train] epochs.
        #[arg(long)]
        epochs: Option<usize>,
        #[command(flatten)]
        run: RunOptions,
        /// Print one JSON object on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Scores the env's pretrained model (pretraining it first if its checkpoint is missing).
    Evaluate {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        #[command(flatten)]
        run: RunOptions,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Allocates a policy without learning and scores it.
    Baseline {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        #[arg(long, value_enum)]
        method: Method,
        /// Keep this fraction of the budget metric (overrides the env's target.keep).
        #[arg(long)]
        keep: Option<f64>,
        /// Budget metric, params or flops (overrides the env's target.metric).
        #[arg(long)]
        metric: Option<String>,
        /// unstructured, channel or N:M (overrides the env's granularity).
        #[arg(long)]
        granularity: Option<String>,
        /// Masked fine-tuning steps before scoring (overrides the env's reward.finetune_steps).
        #[arg(long)]
        finetune_steps: Option<usize>,
        /// Write the policy file here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Prunes an env's model with a trained graph agent: zero-shot (one forward pass, one
    /// evaluation), or adapted for a few episodes first; writes the policy and scores it.
    Transfer {
        /// The graph agent's checkpoint (`agent.safetensors` of a search with agent = "gnn",
        /// of `train-agent` or of `meta-train`).
        #[arg(long)]
        agent: PathBuf,
        /// Env file (envs/*.toml) of the model to prune.
        #[arg(long)]
        env: PathBuf,
        /// Fine-tune the agent on this env for this many episodes (0: zero-shot).
        #[arg(long, default_value_t = 0)]
        adapt_episodes: usize,
        /// PPO settings for adaptation: the `[gnn]` table of this config (e.g. the
        /// meta-train config whose inner loop the agent was trained for); default: `[gnn]`'s
        /// defaults.
        #[arg(long)]
        gnn_config: Option<PathBuf>,
        /// Score adaptation episodes on only the first N validation samples.
        #[arg(long)]
        eval_samples: Option<usize>,
        /// Run folder for the adaptation episodes (default: runs/transfer-<env>-s<seed>-<time>).
        #[arg(long)]
        logdir: Option<PathBuf>,
        /// Write the policy file here (default: <logdir>/policy.json, or
        /// transfer-<env>.json when zero-shot).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Applies a policy file to the env's model, scores it, and optionally saves the pruned model.
    Apply {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        /// Policy file (policies/*.json).
        #[arg(long)]
        policy: PathBuf,
        /// Masked fine-tuning steps before scoring (overrides the env's reward.finetune_steps).
        #[arg(long)]
        finetune_steps: Option<usize>,
        /// Write the pruned model here: an ONNX file when FILE ends in .onnx, else
        /// safetensors plus FILE.graph.json; channel-pruned models are physically slimmed.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Start from a PruningNet's weights for the policy (the pruningnet.safetensors of a
        /// search with agent = "pruningnet") instead of the pretrained model's.
        #[arg(long)]
        pruningnet: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Trains one graph agent on several models and budgets at once (for `transfer`).
    TrainAgent {
        /// Agent-training config (configs/gnn-train.toml).
        #[arg(long)]
        config: PathBuf,
        /// Seed (overrides the config's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Episodes (overrides the config's episodes).
        #[arg(long)]
        episodes: Option<usize>,
        /// Run folder (default: runs/<config name>-s<seed>-<time>).
        #[arg(long)]
        logdir: Option<PathBuf>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Threads libtorch may use on the CPU.
        #[arg(long)]
        threads: Option<i32>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Meta-trains a graph agent with Reptile over many models, budgets and granularities, for
    /// fast adaptation to new ones (`transfer --adapt-episodes`, or agent = "meta" in search).
    MetaTrain {
        /// Meta-training config (configs/meta-train.toml).
        #[arg(long)]
        config: PathBuf,
        /// Also write the meta-trained agent here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed (overrides the config's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Reptile iterations (overrides the config's reptile.iterations).
        #[arg(long)]
        iterations: Option<usize>,
        /// Run folder (default: runs/<config name>-s<seed>-<time>).
        #[arg(long)]
        logdir: Option<PathBuf>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Threads libtorch may use on the CPU.
        #[arg(long)]
        threads: Option<i32>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Measures how fast graph agents adapt to envs: for every initialisation, env and seed,
    /// the validation reward of the best policy found within each number of adaptation
    /// episodes (0 = the zero-shot greedy policy). Writes JSON and optionally a PNG.
    AdaptCurve {
        /// NAME=CHECKPOINT, repeatable; CHECKPOINT `random` is a freshly initialised agent.
        #[arg(long = "init", required = true)]
        inits: Vec<String>,
        /// Env file, repeatable: the held-out tasks.
        #[arg(long = "env", required = true)]
        envs: Vec<PathBuf>,
        /// PPO settings for adaptation: the `[gnn]` table of this config (e.g. the
        /// meta-train config whose inner loop the agent was trained for); default: `[gnn]`'s
        /// defaults.
        #[arg(long)]
        gnn_config: Option<PathBuf>,
        /// Episode counts to report, ascending.
        #[arg(long, value_delimiter = ',', default_value = "0,5,10,20,50")]
        points: Vec<usize>,
        /// Seeds of the adaptation runs.
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        seeds: Vec<u64>,
        /// Score adaptation episodes on only the first N validation samples.
        #[arg(long)]
        eval_samples: Option<usize>,
        /// Write the curves (JSON) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw the mean curves to this PNG.
        #[arg(long)]
        png: Option<PathBuf>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Threads libtorch may use on the CPU.
        #[arg(long)]
        threads: Option<i32>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Searches a per-layer keep-ratio policy with an agent, logging to TensorBoard.
    Search {
        #[command(flatten)]
        request: SearchRequest,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Threads libtorch may use on the CPU.
        #[arg(long)]
        threads: Option<i32>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Draws a PNG of one or more runs: reward curves and the best policy's per-layer keep
    /// profile beside uniform and LAMP at the same budget.
    Report {
        /// Run folders (from `search`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// PNG to write (default: <first run folder>/report.png).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Writes how the env's data is split and normalised (JSON: training and validation
    /// indices into the training file, per-channel mean and std), so a model trained outside
    /// autoprune can train on the same training samples and see the same inputs.
    Split {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Shows the env's model graph: nodes, costs and prunable groups.
    Graph {
        /// Env file (envs/*.toml).
        #[arg(long)]
        env: PathBuf,
        /// Also write the graph in Graphviz DOT to this file.
        #[arg(long)]
        dot: Option<PathBuf>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`autoprune graph --json | head`) instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        // One line: the library's errors already say what, where and how to fix it.
        // A cause whose text is already in the line (an I/O error under its path) is not
        // repeated.
        let mut line = String::new();
        for cause in error.chain().map(|e| e.to_string()) {
            if !line.contains(&cause) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&cause);
            }
        }
        eprintln!("error: {line}");
        // A Ctrl-C that left nothing to keep exits like every other Ctrl-C.
        let interrupted = matches!(
            error.downcast_ref::<autoprune::error::Error>(),
            Some(autoprune::error::Error::Interrupted { .. })
        );
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain {
            env,
            epochs,
            run,
            json,
        } => pretrain(&env, epochs, &run, json),
        Command::Evaluate { env, run, json } => evaluate(&env, &run, json),
        Command::Graph { env, dot, json } => graph(&env, dot, json),
        Command::Split { env, out } => split(&env, out.as_deref()),
        Command::Report { runs, out, json } => report_png(&runs, out, json),
        Command::TrainAgent {
            config,
            seed,
            episodes,
            logdir,
            device,
            threads,
            json,
        } => train_agent(&config, seed, episodes, logdir, &device, threads, json),
        Command::MetaTrain {
            config,
            out,
            seed,
            iterations,
            logdir,
            device,
            threads,
            json,
        } => meta_train(
            &config, seed, iterations, logdir, out, &device, threads, json,
        ),
        Command::AdaptCurve {
            inits,
            envs,
            gnn_config,
            points,
            seeds,
            eval_samples,
            out,
            png,
            device,
            threads,
            json,
        } => adapt_curve(
            &inits,
            &envs,
            gnn_config.as_deref(),
            &points,
            &seeds,
            eval_samples,
            out,
            png,
            &RunOptions {
                device,
                threads,
                seed: 0,
            },
            json,
        ),
        Command::Search {
            request,
            device,
            threads,
            json,
        } => search(request, &device, threads, json),
        Command::Baseline {
            env,
            method,
            keep,
            metric,
            granularity,
            finetune_steps,
            out,
            run,
            json,
        } => {
            let overrides = Overrides {
                keep,
                metric,
                granularity,
                finetune_steps,
            };
            baseline(&env, method, &overrides, out.as_deref(), &run, json)
        }
        Command::Transfer {
            agent,
            env,
            adapt_episodes,
            gnn_config,
            eval_samples,
            logdir,
            out,
            run,
            json,
        } => transfer(
            &agent,
            &env,
            adapt_episodes,
            gnn_config.as_deref(),
            eval_samples,
            logdir,
            out,
            &run,
            json,
        ),
        Command::Apply {
            env,
            policy,
            finetune_steps,
            save,
            pruningnet,
            run,
            json,
        } => {
            let overrides = Overrides {
                finetune_steps,
                ..Overrides::default()
            };
            apply(
                &env,
                &policy,
                &overrides,
                save.as_deref(),
                pruningnet.as_deref(),
                &run,
                json,
            )
        }
    }
}

fn setup_run(run: &RunOptions) -> Result<tch::Device> {
    let device = parse_device(&run.device)?;
    if let Some(threads) = run.threads {
        anyhow::ensure!(threads >= 1, "--threads {threads}: use 1 or more");
        tch::set_num_threads(threads);
    }
    seed_torch(run.seed);
    Ok(device)
}

fn pretrain(env: &Path, epochs: Option<usize>, run: &RunOptions, json: bool) -> Result<()> {
    let started = Instant::now();
    let spec = EnvSpec::load(env)?;
    anyhow::ensure!(
        spec.model.arch != autoprune::env::Arch::Onnx,
        "{}: key `model.arch`: an onnx model brings its own weights; there is nothing to pretrain (run `autoprune evaluate --env {}` to score it)",
        env.display(),
        env.display()
    );
    let device = setup_run(run)?;
    let graph = spec.build_graph()?;
    let checkpoint = spec.checkpoint_path();
    if let Some(dir) = checkpoint.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "{}: cannot create the checkpoint folder (model.checkpoint in {})",
                dir.display(),
                env.display()
            )
        })?;
    }
    let progress = Progress::stderr();
    if !json {
        print!("{}", summary(&spec.name, &graph));
    }
    let data = data::load(&spec.data_options(), device)?;
    let mut config = spec.train.clone();
    if let Some(epochs) = epochs {
        anyhow::ensure!(epochs >= 1, "--epochs {epochs}: use 1 or more");
        config.epochs = epochs;
    }
    progress.println(&format!(
        "pretraining {} on {} ({} train / {} val / {} test) on {}, {} epochs",
        spec.name,
        spec.data.dataset.name(),
        data.train.len(),
        data.val.len(),
        data.test.len(),
        device_name(device),
        config.epochs
    ));
    let mut net = GraphNet::new(graph, device);
    let train_started = Instant::now();
    let history = train(&mut net, &data, &config, run.seed, &progress)?;
    let train_seconds = train_started.elapsed().as_secs_f64();
    let test = net.evaluate(&data.test, 1000)?;
    net.save(&checkpoint)?;
    let val = history.last().map(|e| e.val.accuracy).unwrap_or(0.0);
    if json {
        let out = json!({
            "env": spec.name,
            "arch": spec.model.arch,
            "dataset": spec.data.dataset.name(),
            "device": device_name(device),
            "epochs": config.epochs,
            "params": net.graph().total_params(),
            "flops": net.graph().total_flops(),
            "val_accuracy": val,
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "train_seconds": train_seconds,
            "seconds": started.elapsed().as_secs_f64(),
            "checkpoint": checkpoint,
            "history": history,
        });
        println!("{out}");
    } else {
        println!(
            "test accuracy {:.2}% (loss {:.4}), val accuracy {:.2}%, {} epochs in {:.0}s on {}",
            100.0 * test.accuracy,
            test.loss,
            100.0 * val,
            config.epochs,
            train_seconds,
            device_name(device)
        );
        println!("checkpoint written to {}", checkpoint.display());
    }
    Ok(())
}

fn evaluate(env: &Path, run: &RunOptions, json: bool) -> Result<()> {
    let started = Instant::now();
    let spec = EnvSpec::load(env)?;
    let (net, data, device) = pretrained(&spec, run)?;
    let eval_split = data.split(spec.data.eval_split);
    let on_eval = net.evaluate(eval_split, 1000)?;
    let test = net.evaluate(&data.test, 1000)?;
    if json {
        let out = json!({
            "env": spec.name,
            "device": device_name(device),
            "params": net.graph().total_params(),
            "flops": net.graph().total_flops(),
            "split": spec.data.eval_split,
            "accuracy": on_eval.accuracy,
            "loss": on_eval.loss,
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "checkpoint": spec.weights_path(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{out}");
    } else {
        println!(
            "{}: {:?} accuracy {:.2}%, test accuracy {:.2}% ({} params, {} MACs per sample)",
            spec.name,
            spec.data.eval_split,
            100.0 * on_eval.accuracy,
            100.0 * test.accuracy,
            net.graph().total_params(),
            net.graph().total_flops()
        );
    }
    Ok(())
}

fn split(env: &Path, out: Option<&Path>) -> Result<()> {
    let spec = EnvSpec::load(env)?;
    let plan = data::split_plan(&spec.data_options())?;
    let text = serde_json::to_string(&plan)?;
    match out {
        Some(path) => {
            ensure_writable(path)?;
            autoprune::fsio::write_atomic(path, text.as_bytes())?;
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn graph(env: &Path, dot: Option<PathBuf>, json: bool) -> Result<()> {
    let spec = EnvSpec::load(env)?;
    let graph = spec.build_graph()?;
    if let Some(path) = &dot {
        std::fs::write(path, graph.to_dot())
            .with_context(|| format!("{}: cannot write the DOT file", path.display()))?;
    }
    if json {
        let mut out = serde_json::to_value(graph.to_json())?;
        out["env"] = json!(spec.name);
        println!("{out}");
    } else {
        print!("{}", table(&graph));
        print!("{}", summary(&spec.name, &graph));
        if let Some(path) = dot {
            println!("DOT written to {}", path.display());
        }
    }
    Ok(())
}

/// Per-node table: name, op, output shape, params, MACs, group.
fn table(graph: &ModelGraph) -> String {
    let mut out = format!(
        "{:<28} {:<18} {:<16} {:>10} {:>12} {:>5}\n",
        "node", "op", "shape", "params", "MACs", "group"
    );
    for &i in graph.order() {
        let node = graph.node(i);
        out.push_str(&format!(
            "{:<28} {:<18} {:<16} {:>10} {:>12} {:>5}\n",
            node.name,
            node.op.type_name(),
            format!("{:?}", node.out_shape),
            graph.node_params(i),
            graph.node_flops(i),
            graph.group_of(i).map(|g| g.to_string()).unwrap_or_default()
        ));
    }
    out
}

/// A few lines: totals and the prunable groups.
fn summary(name: &str, graph: &ModelGraph) -> String {
    let groups = graph.prunable_groups();
    let mut out = format!(
        "{name}: {} nodes, {} params, {} MACs per sample, {} prunable groups\n",
        graph.order().len(),
        graph.total_params(),
        graph.total_flops(),
        groups.len()
    );
    for (i, g) in groups.iter().enumerate() {
        let producers: Vec<&str> = g
            .producers
            .iter()
            .map(|&p| graph.node(p).name.as_str())
            .collect();
        out.push_str(&format!(
            "  group {i}: {} channels, produced by {}\n",
            g.channels,
            producers.join(", ")
        ));
    }
    out
}

/// Command-line values that replace the env's.
#[derive(Default)]
struct Overrides {
    keep: Option<f64>,
    metric: Option<String>,
    granularity: Option<String>,
    finetune_steps: Option<usize>,
}

/// Loads the env with overrides applied and validated.
fn load_env(path: &Path, overrides: &Overrides) -> Result<EnvSpec> {
    let mut spec = EnvSpec::load(path)?;
    if let Some(keep) = overrides.keep {
        spec.prune.target.keep = keep;
    }
    if let Some(metric) = &overrides.metric {
        spec.prune.target.metric = match metric.as_str() {
            "params" => autoprune::env::Metric::Params,
            "flops" => autoprune::env::Metric::Flops,
            other => anyhow::bail!("--metric {other}: use params or flops"),
        };
    }
    if let Some(granularity) = &overrides.granularity {
        spec.prune.granularity = autoprune::env::Granularity::try_from(granularity.clone())
            .map_err(|e| anyhow::anyhow!("--granularity: {e}"))?;
    }
    if let Some(steps) = overrides.finetune_steps {
        spec.reward.finetune_steps = steps;
    }
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{e} (after command-line overrides)"))?;
    Ok(spec)
}

/// The env's data set and pretrained model (pretrained first if its checkpoint is missing).
fn pretrained(
    spec: &EnvSpec,
    run: &RunOptions,
) -> Result<(GraphNet, autoprune::data::Dataset, tch::Device)> {
    let device = setup_run(run)?;
    if spec.model.arch == autoprune::env::Arch::Onnx {
        // The file's initializers are the pretrained weights.
        let imported = spec.import_onnx()?;
        let data = data::load(&spec.data_options(), device)?;
        let source = spec.model.path.clone().unwrap_or_default();
        let net = autoprune::onnx::load_net(imported, device, &source)?;
        return Ok((net, data, device));
    }
    let graph = spec.build_graph()?;
    let data = data::load(&spec.data_options(), device)?;
    let net = load_or_train(
        graph,
        &spec.checkpoint_path(),
        &data,
        &spec.train,
        run.seed,
        &Progress::stderr(),
    )?;
    Ok((net, data, device))
}

/// The pretrained model and an evaluator over it.
fn evaluator_for(spec: &EnvSpec, run: &RunOptions) -> Result<(Evaluator, tch::Device)> {
    let (net, data, device) = pretrained(spec, run)?;
    let evaluator = Evaluator::new(&net, &data, EvalConfig::from_env(spec, run.seed)?)?;
    Ok((evaluator, device))
}

/// The score, with the test split's accuracy and loss beside it, as one JSON object.
fn report(score: &Score, test: &Score, extra: serde_json::Value) -> Result<serde_json::Value> {
    let mut out = serde_json::to_value(score)?;
    out["test_accuracy"] = json!(test.accuracy);
    out["test_loss"] = json!(test.loss);
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    Ok(out)
}

fn print_score(title: &str, score: &Score, test: &Score) {
    println!(
        "{title}: {:?} accuracy {:.2}%, test accuracy {:.2}%, params kept {:.4} ({}), FLOPs kept {:.4} ({} MACs), reward {:.4}",
        score.split,
        100.0 * score.accuracy,
        100.0 * test.accuracy,
        score.params_kept,
        score.params,
        score.flops_kept,
        score.flops,
        score.reward
    );
    for layer in &score.layers {
        println!("  {:<32} keep {:.4}", layer.name, layer.keep);
    }
}

fn baseline(
    env: &Path,
    method: Method,
    overrides: &Overrides,
    out: Option<&Path>,
    run: &RunOptions,
    json: bool,
) -> Result<()> {
    let spec = load_env(env, overrides)?;
    if let Some(path) = out {
        ensure_writable(path)?;
    }
    let (mut evaluator, _) = evaluator_for(&spec, run)?;
    let keeps = {
        let wall = evaluator.wall(&spec.path)?;
        allocate(
            method,
            &wall,
            evaluator.costs(),
            evaluator.unit_scores(),
            run.seed,
        )
    };
    let score = evaluator.evaluate(&keeps)?;
    let test = evaluator.rescore_on(&keeps, autoprune::data::SplitName::Test)?;
    if let Some(path) = out {
        let policy = PolicyFile {
            schema: SCHEMA,
            env: spec.name.clone(),
            model: fingerprint(evaluator.costs().graph()),
            granularity: spec.prune.granularity,
            target: spec.prune.target,
            layers: score.layers.clone(),
            metrics: score.clone(),
            agent: method.name().into(),
            episodes: 0,
            seed: run.seed,
            created: now_rfc3339(),
        };
        policy.save(path)?;
    }
    if json {
        let extra = json!({"env": spec.name, "method": method.name(), "target": spec.prune.target, "granularity": spec.prune.granularity, "finetune_steps": spec.reward.finetune_steps, "policy": out});
        println!("{}", report(&score, &test, extra)?);
    } else {
        print_score(&format!("{} {}", spec.name, method.name()), &score, &test);
        if let Some(path) = out {
            println!("policy written to {}", path.display());
        }
    }
    Ok(())
}

fn apply(
    env: &Path,
    policy_path: &Path,
    overrides: &Overrides,
    save: Option<&Path>,
    pruningnet: Option<&Path>,
    run: &RunOptions,
    json: bool,
) -> Result<()> {
    let spec = load_env(env, overrides)?;
    let policy = PolicyFile::load(policy_path)?;
    if policy.target != spec.prune.target {
        Progress::stderr().println(&format!(
            "note: {} was made for {:?} keep {}, the env asks for {:?} keep {}; scoring the policy as it is",
            policy_path.display(),
            policy.target.metric,
            policy.target.keep,
            spec.prune.target.metric,
            spec.prune.target.keep
        ));
    }
    // Check the fingerprint before loading data or weights.
    let costs = autoprune::prune::CostModel::new(&spec.build_graph()?, spec.prune.granularity);
    let keeps = policy.keeps_for(&costs, policy_path)?;
    if let Some(path) = save {
        ensure_writable(path)?;
    }
    if pruningnet.is_some() {
        autoprune::search::check_pruningnet_env(&spec)?;
    }
    let (net, data, _) = pretrained(&spec, run)?;
    let mut evaluator = Evaluator::new(&net, &data, EvalConfig::from_env(&spec, run.seed)?)?;
    if let Some(path) = pruningnet {
        let generator = autoprune::policy::load_pruningnet(path, &net)?;
        evaluator.set_source(Some(Box::new(generator)));
    }
    let score = evaluator.evaluate(&keeps)?;
    let test = evaluator.rescore_on(&keeps, autoprune::data::SplitName::Test)?;
    if let Some(path) = save {
        save_pruned(&mut evaluator, &keeps, spec.prune.granularity, path)?;
    }
    if json {
        let extra = json!({"env": spec.name, "policy": policy_path, "agent": policy.agent, "finetune_steps": spec.reward.finetune_steps, "saved": save, "pruningnet": pruningnet});
        println!("{}", report(&score, &test, extra)?);
    } else {
        print_score(
            &format!("{} with {}", spec.name, policy_path.display()),
            &score,
            &test,
        );
        if let Some(path) = save {
            if path.extension().is_some_and(|e| e == "onnx") {
                println!("pruned model written to {} (ONNX)", path.display());
            } else {
                println!(
                    "pruned model written to {} (graph in {})",
                    path.display(),
                    graph_sidecar(path).display()
                );
            }
        }
    }
    Ok(())
}

/// Where a saved model's graph goes: `model.safetensors` -> `model.graph.json`.
fn graph_sidecar(path: &Path) -> PathBuf {
    path.with_extension("graph.json")
}

fn ensure_writable(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            let why = if dir.ancestors().any(|a| a.is_file()) {
                "a file is in the way".to_string()
            } else {
                e.to_string()
            };
            anyhow::bail!(
                "{}: cannot create the output folder ({why}); choose another path",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes the pruned model: masked weights, or for channel pruning a slimmed model.
fn save_pruned(
    evaluator: &mut Evaluator,
    keeps: &[f64],
    granularity: autoprune::env::Granularity,
    path: &Path,
) -> Result<()> {
    let masked = evaluator.apply(keeps)?.duplicate();
    let pruned = if granularity == autoprune::env::Granularity::Channel {
        slim(&masked, evaluator.masker(), keeps)?
    } else {
        masked
    };
    if path.extension().is_some_and(|e| e == "onnx") {
        return Ok(autoprune::onnx::export(&pruned, path)?);
    }
    let graph_json = serde_json::to_string_pretty(&pruned.graph().to_json())?;
    let sidecar = graph_sidecar(path);
    autoprune::fsio::write_atomic(&sidecar, graph_json.as_bytes())?;
    pruned.save(path)?;
    Ok(())
}

/// One task per env, granularity and budget (granularities empty: each env's own), each with
/// its own evaluator over the env's pretrained model; `config` names the file in errors.
fn build_tasks(
    config: &Path,
    envs: &[PathBuf],
    budgets: &[f64],
    granularities: &[autoprune::env::Granularity],
    eval_samples: Option<usize>,
    run: &RunOptions,
) -> Result<Vec<autoprune::search::train_agent::Task>> {
    use autoprune::search::train_agent::Task;
    let mut tasks: Vec<Task> = Vec::new();
    for env in envs {
        let base = EnvSpec::load(env)?;
        let (net, data, _) = pretrained(&base, run)?;
        let own = [base.prune.granularity];
        let given = !granularities.is_empty();
        let granularities = if !given { &own[..] } else { granularities };
        for &granularity in granularities {
            for &budget in budgets {
                let mut spec = base.clone();
                spec.prune.target.keep = budget;
                spec.prune.granularity = granularity;
                spec.validate().map_err(|e| {
                    anyhow::anyhow!("{e} (as a task of {} at {budget})", config.display())
                })?;
                let mut eval_config = EvalConfig::from_env(&spec, run.seed)?;
                eval_config.eval_samples = eval_samples;
                let name = if !given {
                    format!("{}@{budget}", spec.name)
                } else {
                    let g: String = granularity.into();
                    format!("{}/{g}@{budget}", spec.name)
                };
                anyhow::ensure!(
                    tasks.iter().all(|t| t.name != name),
                    "{}: key `envs`: two envs are named `{}` (or a budget repeats); give each env file its own `name`",
                    config.display(),
                    spec.name
                );
                tasks.push(Task {
                    name,
                    evaluator: Evaluator::new(&net, &data, eval_config)?,
                    spec,
                });
            }
        }
    }
    Ok(tasks)
}

/// The run folder of a training command (default: runs/<name>-s<seed>-<time>), created; it
/// must not hold a run yet. Ctrl-C is armed from here on.
fn training_dir(logdir: Option<PathBuf>, name: &str, seed: u64) -> Result<PathBuf> {
    let dir = logdir.unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{name}-s{seed}-{}",
            now_rfc3339().replace([':', '-'], "").trim_end_matches('Z')
        ))
    });
    anyhow::ensure!(
        !dir.join(autoprune::search::EPISODES_FILE).exists(),
        "{}: key `--logdir`: already holds a run; choose another folder",
        dir.display()
    );
    install_ctrl_c();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the run folder", dir.display()))?;
    Ok(dir)
}

/// `autoprune meta-train`: Reptile over the config's task distribution.
#[allow(clippy::too_many_arguments)]
fn meta_train(
    path: &Path,
    seed: Option<u64>,
    iterations: Option<usize>,
    logdir: Option<PathBuf>,
    out: Option<PathBuf>,
    device: &str,
    threads: Option<i32>,
    json: bool,
) -> Result<()> {
    use autoprune::search::meta_train::{meta_train, MetaTrainConfig};
    let mut config = MetaTrainConfig::load(path)?;
    if let Some(seed) = seed {
        config.seed = seed;
    }
    if let Some(iterations) = iterations {
        config.reptile.iterations = iterations;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{e} (after --iterations)"))?;
    }
    if let Some(out) = &out {
        ensure_writable(out)?;
    }
    let run = RunOptions {
        device: device.to_string(),
        threads,
        seed: config.seed,
    };
    let mut tasks = build_tasks(
        path,
        &config.envs,
        &config.budgets,
        &config.granularities,
        config.eval_samples,
        &run,
    )?;
    let dir = training_dir(logdir, &config.name, config.seed)?;
    let outcome = {
        let mut sink = autoprune::runlog::TensorBoardSink::new(&dir)?;
        meta_train(
            &config,
            &mut tasks,
            &dir,
            &mut sink,
            Progress::stderr(),
            &STOP,
        )
    }?;
    let agent = match out {
        Some(out) => {
            let bytes = std::fs::read(&outcome.agent)
                .with_context(|| format!("{}: cannot read", outcome.agent.display()))?;
            autoprune::fsio::write_atomic(&out, &bytes)?;
            out
        }
        None => outcome.agent.clone(),
    };
    if json {
        let best = best_rewards_json(&outcome.best);
        println!(
            "{}",
            json!({"iterations": outcome.iterations, "episodes": outcome.episodes, "interrupted": outcome.interrupted, "tasks": tasks.len(), "best_reward": best, "agent": agent, "logdir": dir})
        );
    } else {
        println!(
            "{} Reptile iterations ({} episodes) over {} tasks; meta-trained agent written to {} (use it with autoprune transfer --agent, or agent = \"meta\" in a search config)",
            outcome.iterations,
            outcome.episodes,
            tasks.len(),
            agent.display()
        );
    }
    if outcome.interrupted {
        eprintln!(
            "interrupted: the agent holds the meta-weights after the last finished iteration"
        );
        std::process::exit(130);
    }
    Ok(())
}

/// `autoprune adapt-curve`: best-so-far validation reward against adaptation episodes.
#[allow(clippy::too_many_arguments)]
fn adapt_curve(
    inits: &[String],
    envs: &[PathBuf],
    gnn_config: Option<&Path>,
    points: &[usize],
    seeds: &[u64],
    eval_samples: Option<usize>,
    out: Option<PathBuf>,
    png: Option<PathBuf>,
    run: &RunOptions,
    json: bool,
) -> Result<()> {
    use autoprune::agents::gnn::GraphAgent;
    use autoprune::env::PruneEnv;
    let inits: Vec<(String, Option<PathBuf>)> = inits
        .iter()
        .map(|spec| {
            let (name, path) = spec.split_once('=').with_context(|| {
                format!("--init {spec}: write NAME=CHECKPOINT (or NAME=random)")
            })?;
            anyhow::ensure!(!name.is_empty(), "--init {spec}: the name is empty");
            let path = (path != "random").then(|| PathBuf::from(path));
            if let Some(path) = &path {
                anyhow::ensure!(
                    path.is_file(),
                    "--init {spec}: {} is not a file (give an agent.safetensors, or random)",
                    path.display()
                );
            }
            Ok((name.to_string(), path))
        })
        .collect::<Result<_>>()?;
    for (i, (name, _)) in inits.iter().enumerate() {
        anyhow::ensure!(
            inits[..i].iter().all(|(other, _)| other != name),
            "--init {name}=...: the name is given twice; give each start its own name"
        );
    }
    anyhow::ensure!(
        eval_samples != Some(0),
        "--eval-samples: give at least 1 (or leave it out to score on the whole validation split)"
    );
    let gnn = gnn_settings(gnn_config)?;
    anyhow::ensure!(
        points.windows(2).all(|w| w[0] < w[1]),
        "--points: give episode counts in ascending order, e.g. 0,5,10,20,50"
    );
    anyhow::ensure!(!seeds.is_empty(), "--seeds: give at least one seed");
    for path in [&out, &png].into_iter().flatten() {
        ensure_writable(path)?;
    }
    let mut runs = Vec::new();
    let total = inits.len() * envs.len() * seeds.len();
    let progress = Progress::stderr();
    let bar = progress.bar(total as u64, "adaptation runs");
    for env in envs {
        let spec = EnvSpec::load(env)?;
        let (net, data, _) = pretrained(&spec, run)?;
        for &seed in seeds {
            let eval_config = EvalConfig::from_env(&spec, seed)?;
            let mut rescore = Evaluator::new(&net, &data, eval_config.clone())?;
            let mut search = Evaluator::new(
                &net,
                &data,
                EvalConfig {
                    eval_samples,
                    ..eval_config
                },
            )?;
            for (name, path) in &inits {
                let mut prune_env = PruneEnv::new(search.wall(&spec.path)?);
                let budget = prune_env.wall().budget().keep;
                let mut agent = match path {
                    Some(path) => autoprune::policy::load_graph_agent(
                        path,
                        search.costs(),
                        budget,
                        seed,
                        gnn.clone(),
                    )?,
                    None => GraphAgent::new(
                        gnn.clone(),
                        search.costs(),
                        budget,
                        seed,
                        tch::Device::Cpu,
                    )?,
                };
                let rewards = autoprune::search::adapt::adaptation_curve(
                    &mut agent,
                    &mut prune_env,
                    &mut search,
                    &mut rescore,
                    points,
                )?;
                progress.println(&format!(
                    "{name} on {} (seed {seed}): {}",
                    spec.name,
                    rewards
                        .iter()
                        .map(|r| format!("{r:.4}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                runs.push(
                    json!({"init": name, "env": spec.name, "seed": seed, "rewards": rewards}),
                );
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    // Mean and sample std over every env and seed, per initialisation and point.
    let mut summary = serde_json::Map::new();
    let mut lines = Vec::new();
    for (name, _) in &inits {
        let rows: Vec<Vec<f64>> = runs
            .iter()
            .filter(|r| r["init"] == name.as_str())
            .map(|r| serde_json::from_value(r["rewards"].clone()).unwrap_or_default())
            .collect();
        let stats: Vec<(f64, f64)> = (0..points.len())
            .map(|i| mean_std(&rows.iter().map(|r| r[i]).collect::<Vec<_>>()))
            .collect();
        lines.push((
            name.clone(),
            points
                .iter()
                .zip(&stats)
                .map(|(&p, &(m, _))| (p as f64, m))
                .collect::<Vec<_>>(),
        ));
        summary.insert(
            name.clone(),
            json!({"mean": stats.iter().map(|s| s.0).collect::<Vec<_>>(), "std": stats.iter().map(|s| s.1).collect::<Vec<_>>()}),
        );
    }
    let result = json!({
        "points": points,
        "seeds": seeds,
        "envs": envs,
        "eval_samples": eval_samples,
        "gnn": gnn,
        "runs": runs,
        "summary": summary,
    });
    if let Some(out) = &out {
        autoprune::fsio::write_atomic(out, format!("{result:#}\n").as_bytes())?;
    }
    if let Some(png) = &png {
        autoprune::report::render_lines(
            png,
            "best validation reward within N adaptation episodes (mean over envs and seeds)",
            "adaptation episodes",
            "validation reward",
            &lines,
        )?;
    }
    if json {
        println!("{result}");
    } else {
        let header: Vec<String> = points.iter().map(|p| format!("{p:>15}")).collect();
        println!("{:<16}{}", "episodes", header.join(""));
        for (name, _) in &inits {
            let s = &summary[name];
            let cells: Vec<String> = (0..points.len())
                .map(|i| {
                    format!(
                        "{:>15}",
                        format!(
                            "{:.4}±{:.4}",
                            s["mean"][i].as_f64().unwrap_or(f64::NAN),
                            s["std"][i].as_f64().unwrap_or(f64::NAN)
                        )
                    )
                })
                .collect();
            println!("{name:<16}{}", cells.join(""));
        }
    }
    Ok(())
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Best reward per task as a JSON object; tasks never drawn (no finite reward) are left out.
fn best_rewards_json(best: &[(String, f64)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = best
        .iter()
        .filter(|(_, reward)| reward.is_finite())
        .map(|(task, reward)| (task.clone(), json!(reward)))
        .collect();
    serde_json::Value::Object(map)
}

/// `autoprune train-agent`: one graph agent trained on every env of the config at every budget.
fn train_agent(
    path: &Path,
    seed: Option<u64>,
    episodes: Option<usize>,
    logdir: Option<PathBuf>,
    device: &str,
    threads: Option<i32>,
    json: bool,
) -> Result<()> {
    use autoprune::search::train_agent::{train_graph_agent, TrainAgentConfig};
    let mut config = TrainAgentConfig::load(path)?;
    if let Some(seed) = seed {
        config.seed = seed;
    }
    if let Some(episodes) = episodes {
        anyhow::ensure!(episodes >= 1, "--episodes {episodes}: use 1 or more");
        config.episodes = episodes;
    }
    let run = RunOptions {
        device: device.to_string(),
        threads,
        seed: config.seed,
    };
    let mut tasks = build_tasks(
        path,
        &config.envs,
        &config.budgets,
        &[],
        config.eval_samples,
        &run,
    )?;
    let dir = training_dir(logdir, &config.name, config.seed)?;
    let outcome = {
        let mut sink = autoprune::runlog::TensorBoardSink::new(&dir)?;
        train_graph_agent(
            &config,
            &mut tasks,
            &dir,
            &mut sink,
            Progress::stderr(),
            &STOP,
        )
    }?;
    if json {
        let best = best_rewards_json(&outcome.best);
        println!(
            "{}",
            json!({"episodes": outcome.episodes, "interrupted": outcome.interrupted, "tasks": tasks.len(), "best_reward": best, "agent": outcome.agent, "logdir": dir})
        );
    } else {
        for (task, reward) in &outcome.best {
            println!("{task}: best reward {reward:.4}");
        }
        println!(
            "{} episodes on {} tasks; agent written to {} (use it with autoprune transfer --agent)",
            outcome.episodes,
            tasks.len(),
            outcome.agent.display()
        );
    }
    Ok(())
}

/// The graph agent's adaptation settings: `--gnn-config`'s `[gnn]` table, or the defaults.
fn gnn_settings(path: Option<&Path>) -> Result<autoprune::agents::gnn::GnnConfig> {
    Ok(match path {
        Some(path) => autoprune::agents::gnn::GnnConfig::from_config_file(path)?,
        None => Default::default(),
    })
}

/// `autoprune transfer`: a trained graph agent prunes another env's model.
#[allow(clippy::too_many_arguments)]
fn transfer(
    agent_path: &Path,
    env: &Path,
    adapt_episodes: usize,
    gnn_config: Option<&Path>,
    eval_samples: Option<usize>,
    logdir: Option<PathBuf>,
    out: Option<PathBuf>,
    run: &RunOptions,
    json: bool,
) -> Result<()> {
    use autoprune::agents::{Agent, AgentKind, Observation};
    use autoprune::env::PruneEnv;
    use autoprune::search::{RunFolder, Search, SearchConfig};
    let env_text = std::fs::read_to_string(env)
        .with_context(|| format!("{}: cannot read the env file", env.display()))?;
    let spec = EnvSpec::parse(&env_text, env)?;
    let gnn = gnn_settings(gnn_config)?;
    let (net, data, _) = pretrained(&spec, run)?;
    let mut eval_config = EvalConfig::from_env(&spec, run.seed)?;
    let mut evaluator = Evaluator::new(&net, &data, eval_config.clone())?;
    let wall = evaluator.wall(&spec.path)?;
    let budget = wall.budget().keep;
    let mut agent = autoprune::policy::load_graph_agent(
        agent_path,
        evaluator.costs(),
        budget,
        run.seed,
        gnn.clone(),
    )?;
    // Zero-shot: the agent's greedy actions, made feasible by the wall, scored once.
    let mut prune_env = PruneEnv::new(wall);
    let actions = agent.act(Observation::Graph(prune_env.graph_state()), false);
    let keeps = prune_env.step_profile(&actions);
    let zero_shot = evaluator.evaluate(&keeps)?;
    let mut best = PolicyFile {
        schema: SCHEMA,
        env: spec.name.clone(),
        model: fingerprint(evaluator.costs().graph()),
        granularity: spec.prune.granularity,
        target: spec.prune.target,
        layers: zero_shot.layers.clone(),
        metrics: zero_shot.clone(),
        agent: "gnn-transfer".into(),
        episodes: 0,
        seed: run.seed,
        created: now_rfc3339(),
    };
    let mut folder_dir = None;
    if adapt_episodes > 0 {
        let config = SearchConfig {
            name: "transfer".into(),
            env: env.to_path_buf(),
            agent: AgentKind::Gnn,
            episodes: adapt_episodes,
            seed: run.seed,
            eval_samples,
            ddpg: Default::default(),
            ppo: Default::default(),
            evolution: Default::default(),
            gnn,
            meta: Default::default(),
            pruningnet: Default::default(),
            path: PathBuf::from("transfer options"),
        };
        config.validate()?;
        let dir = logdir.unwrap_or_else(|| {
            PathBuf::from("runs").join(format!(
                "transfer-{}-s{}-{}",
                spec.name,
                run.seed,
                now_rfc3339().replace([':', '-'], "").trim_end_matches('Z')
            ))
        });
        let folder = RunFolder::create(&dir, &config, &env_text)?;
        folder.check_weights(
            &files_fingerprint(&spec.weights_files())?,
            &spec.weights_path(),
        )?;
        eval_config.eval_samples = eval_samples;
        let mut adapt_evaluator = Evaluator::new(&net, &data, eval_config)?;
        install_ctrl_c();
        let outcome = {
            let mut sink = autoprune::runlog::TensorBoardSink::new(&folder.dir)?;
            Search {
                config: &config,
                spec: &spec,
                evaluator: &mut adapt_evaluator,
                folder: &folder,
                recorded: Vec::new(),
                sink: &mut sink,
                progress: Progress::stderr(),
                stop: &STOP,
                agent: Some(Box::new(agent)),
            }
            .run()
        }?;
        if let Some(adapted) = outcome.best {
            // Adapted policies were scored on `eval_samples`; rescore the best on the whole
            // validation split before comparing it with the zero-shot policy.
            let keeps: Vec<f64> = adapted.layers.iter().map(|l| l.keep).collect();
            let score = evaluator.evaluate(&keeps)?;
            if score.reward > best.metrics.reward {
                best.layers = score.layers.clone();
                best.metrics = score;
            }
            best.episodes = outcome.episodes;
        }
        folder_dir = Some(folder.dir.clone());
    }
    let keeps: Vec<f64> = best.layers.iter().map(|l| l.keep).collect();
    let test = evaluator.evaluate_on(&keeps, autoprune::data::SplitName::Test)?;
    let out = out.unwrap_or_else(|| match &folder_dir {
        Some(dir) => dir.join("policy.json"),
        None => PathBuf::from(format!("transfer-{}.json", spec.name)),
    });
    ensure_writable(&out)?;
    best.save(&out)?;
    if json {
        let extra = json!({
            "env": spec.name,
            "agent": agent_path,
            "adapt_episodes": adapt_episodes,
            "zero_shot_reward": zero_shot.reward,
            "zero_shot_accuracy": zero_shot.accuracy,
            "policy": out,
            "logdir": folder_dir,
        });
        println!("{}", report(&best.metrics, &test, extra)?);
    } else {
        print_score(
            &format!(
                "{} transferred to {} ({} adaptation episodes)",
                agent_path.display(),
                spec.name,
                adapt_episodes
            ),
            &best.metrics,
            &test,
        );
        println!("policy written to {}", out.display());
    }
    Ok(())
}

/// What `search` was asked to do.
#[derive(Args)]
struct SearchRequest {
    /// Search config (configs/*.toml).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Env file (overrides the config's env).
    #[arg(long)]
    env: Option<PathBuf>,
    /// Agent (overrides the config's agent).
    #[arg(long, value_enum)]
    agent: Option<AgentKind>,
    /// Episodes (overrides the config's episodes).
    #[arg(long)]
    episodes: Option<usize>,
    /// Seed (overrides the config's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder (default: runs/<config>-<env>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Write the best policy here (default: <run folder>/policy.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder (after a crash or Ctrl-C).
    #[arg(long, conflicts_with_all = ["config", "env", "agent", "seed", "logdir"])]
    resume: Option<PathBuf>,
}

/// Set by Ctrl-C: the search stops after the episode in flight.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // A second Ctrl-C: stop now. Every finished episode is already on disk.
            std::process::exit(130);
        }
        eprintln!("\nstopping after the episode in flight (Ctrl-C again to stop at once)");
    });
}

fn search(request: SearchRequest, device: &str, threads: Option<i32>, json: bool) -> Result<()> {
    use autoprune::search::{RunFolder, Search, SearchConfig};
    let started = Instant::now();
    let (folder, config, spec, recorded) = match &request.resume {
        Some(dir) => RunFolder::open(dir)?,
        None => {
            let path = request.config.as_deref().context("--config is required")?;
            let mut config = SearchConfig::load(path)?;
            if let Some(env) = &request.env {
                config.env = env.clone();
            }
            if let Some(agent) = request.agent {
                config.agent = agent;
            }
            if let Some(seed) = request.seed {
                config.seed = seed;
            }
            if let Some(episodes) = request.episodes {
                config.episodes = episodes;
            }
            config.validate()?;
            let env_text = std::fs::read_to_string(&config.env).with_context(|| {
                format!(
                    "{}: cannot read the env file (key `env` in {})",
                    config.env.display(),
                    path.display()
                )
            })?;
            let spec = EnvSpec::parse(&env_text, &config.env)?;
            let dir = request.logdir.clone().unwrap_or_else(|| {
                let stamp = now_rfc3339()
                    .replace([':', '-'], "")
                    .replace('T', "-")
                    .trim_end_matches('Z')
                    .to_string();
                PathBuf::from("runs").join(format!(
                    "{}-{}-s{}-{stamp}",
                    config.name, spec.name, config.seed
                ))
            });
            let folder = RunFolder::create(&dir, &config, &env_text)?;
            (folder, config, spec, Vec::new())
        }
    };
    let mut config = config;
    if request.resume.is_some() {
        if let Some(episodes) = request.episodes {
            config.episodes = episodes;
            config.validate()?;
        }
    }
    let run = RunOptions {
        device: device.to_string(),
        threads,
        seed: config.seed,
    };
    let (net, data, _) = pretrained(&spec, &run)?;
    folder.check_weights(
        &files_fingerprint(&spec.weights_files())?,
        &spec.weights_path(),
    )?;
    let progress = Progress::stderr();
    let mut eval_config = EvalConfig::from_env(&spec, config.seed)?;
    eval_config.eval_samples = config.eval_samples;
    let mut evaluator = Evaluator::new(&net, &data, eval_config)?;
    install_ctrl_c();
    progress.println(&format!(
        "search: {} on {} ({:?} keep {} of {:?}), {} episodes{}, run folder {}",
        config.agent.name(),
        spec.name,
        spec.prune.granularity,
        spec.prune.target.keep,
        spec.prune.target.metric,
        config.episodes,
        if recorded.is_empty() {
            String::new()
        } else {
            format!(" ({} already done)", recorded.len())
        },
        folder.dir.display()
    ));
    // The writer lives in this scope only: it is dropped (and its events are on disk) on
    // every way out of it, errors included.
    let outcome = {
        let mut sink = autoprune::runlog::TensorBoardSink::new(&folder.dir)?;
        if config.agent == AgentKind::Pruningnet {
            autoprune::search::prepare_pruningnet(
                &config,
                &spec,
                &net,
                &mut evaluator,
                &folder.dir,
                &mut sink,
                &progress,
                &STOP,
            )?;
        }
        Search {
            config: &config,
            spec: &spec,
            evaluator: &mut evaluator,
            folder: &folder,
            recorded,
            sink: &mut sink,
            progress,
            stop: &STOP,
            agent: None,
        }
        .run()
    }?;
    let Some(mut best) = outcome.best.clone() else {
        anyhow::bail!(
            "the search stopped before its first episode finished; resume it with --resume {}",
            folder.dir.display()
        );
    };
    if outcome.interrupted {
        let line = format!(
            "interrupted after {} of {} episodes; best so far in {}; continue with: autoprune search --resume {}",
            outcome.episodes,
            config.episodes,
            folder.dir.join(autoprune::search::BEST_FILE).display(),
            folder.dir.display()
        );
        if json {
            println!(
                "{}",
                json!({"interrupted": true, "episodes": outcome.episodes, "logdir": folder.dir, "best_reward": best.metrics.reward})
            );
        }
        eprintln!("{line}");
        std::process::exit(130);
    }
    let test = autoprune::search::test_score(&mut evaluator, &best)?;
    let out = request
        .out
        .clone()
        .unwrap_or_else(|| folder.dir.join("policy.json"));
    ensure_writable(&out)?;
    best.created = now_rfc3339();
    best.save(&out)?;
    if json {
        let extra = json!({
            "env": spec.name,
            "agent": config.agent.name(),
            "episodes": outcome.episodes,
            "seed": config.seed,
            "policy": out,
            "logdir": folder.dir,
            "search_seconds": started.elapsed().as_secs_f64(),
            "seconds_per_episode": outcome.seconds_per_episode(),
            "outside_evaluator_share": outcome.outside_evaluator_share(),
        });
        println!("{}", report(&best.metrics, &test, extra)?);
    } else {
        print_score(
            &format!(
                "best of {} {} episodes on {}",
                outcome.episodes,
                config.agent.name(),
                spec.name
            ),
            &best.metrics,
            &test,
        );
        if outcome.new_episodes > 0 {
            let per_episode = outcome.seconds_per_episode();
            let per_episode = if per_episode < 0.1 {
                format!("{:.1} ms", 1e3 * per_episode)
            } else {
                format!("{per_episode:.2} s")
            };
            println!(
                "{} episodes run: {per_episode} per episode, {:.1}% of it outside the evaluator",
                outcome.new_episodes,
                100.0 * outcome.outside_evaluator_share()
            );
        }
        println!("policy written to {}", out.display());
        println!(
            "TensorBoard logs in {} (tensorboard --logdir {})",
            folder.dir.display(),
            folder.dir.display()
        );
    }
    Ok(())
}

fn report_png(runs: &[PathBuf], out: Option<PathBuf>, json: bool) -> Result<()> {
    use autoprune::report::{render, Profile, RunCurve};
    use autoprune::search::{read_records, BEST_FILE, ENV_FILE, EPISODES_FILE};
    let mut curves = Vec::new();
    for dir in runs {
        let (records, _) = read_records(&dir.join(EPISODES_FILE))?;
        anyhow::ensure!(
            !records.is_empty(),
            "{}: no finished episode to report",
            dir.join(EPISODES_FILE).display()
        );
        let best = PolicyFile::load(&dir.join(BEST_FILE))?;
        let label = format!(
            "{} ({})",
            best.agent,
            dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        curves.push(RunCurve {
            label,
            rewards: records.iter().map(|r| r.reward).collect(),
            best_rewards: records.iter().map(|r| r.best_reward).collect(),
            best_keeps: best.layers.iter().map(|l| l.keep).collect(),
        });
    }
    let spec = EnvSpec::load(&runs[0].join(ENV_FILE))?;
    let run = RunOptions {
        device: "auto".into(),
        threads: None,
        seed: 0,
    };
    let (evaluator, _) = evaluator_for(&spec, &run)?;
    let wall = evaluator.wall(&spec.path)?;
    let units: Vec<String> = evaluator
        .costs()
        .units()
        .iter()
        .map(|u| u.name.clone())
        .collect();
    let references = [Method::Uniform, Method::Lamp]
        .into_iter()
        .map(|m| Profile {
            label: m.name().to_string(),
            keeps: allocate(m, &wall, evaluator.costs(), evaluator.unit_scores(), 0),
        })
        .collect::<Vec<_>>();
    let model = fingerprint(evaluator.costs().graph());
    for (dir, curve) in runs.iter().zip(&curves) {
        let best = PolicyFile::load(&dir.join(BEST_FILE))?;
        anyhow::ensure!(
            best.model == model && best.env == spec.name,
            "{}: a run of another env or model than {}; report runs of one env together",
            dir.display(),
            spec.name
        );
        anyhow::ensure!(
            curve.best_keeps.len() == units.len(),
            "{}: the runs are for different models; report runs of one env together",
            curve.label
        );
    }
    let path = out.unwrap_or_else(|| runs[0].join("report.png"));
    ensure_writable(&path)?;
    let title = format!(
        "{}: keep {} of {:?} ({})",
        spec.name,
        spec.prune.target.keep,
        spec.prune.target.metric,
        String::from(spec.prune.granularity)
    );
    render(&path, &title, &curves, &references, &units)?;
    if json {
        println!("{}", json!({"report": path, "runs": runs}));
    } else {
        println!("report written to {}", path.display());
    }
    Ok(())
}
