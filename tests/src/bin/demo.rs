//! The demo: the seed story end to end, narrated. Starts the broker mock and FixMyPrint in
//! this process (HTTPS with a generated CA, embedded SQLite, a temporary data directory),
//! plays the story with a generated broken model, and writes the original model, the repaired
//! model, the repair report and the repair picture into `--out`. Exits non-zero with the reason when a step fails.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use diax_sdk::Scheme;
use e2e::stack::{Stack, StackOptions};
use e2e::story::{self, Narrator};
use fixmyprint::heal::{self, RepairOptions, generate};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(about = "FixMyPrint kit demo: the seed story end to end, over HTTPS, in one process")]
struct Args {
    /// Where to write original.stl, repaired.stl, report.json and picture.png.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Facets in the generated broken model.
    #[arg(long, default_value_t = 200_000)]
    facets: usize,
    /// Seed of the model generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How broker and FixMyPrint sign: `hmac-sha256` (a shared secret) or `ed25519`
    /// (Standard Webhooks v1a: each keeps its own secret key, no secret is shared).
    #[arg(long, default_value = "hmac-sha256", value_parser = parse_scheme)]
    signature_scheme: Scheme,
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<Scheme>()
        .map_err(|e| e.to_string())
        .and_then(|scheme| {
            // Only the registration names: v1/v1a are header versions, not what the flag takes.
            if s == scheme.name() {
                Ok(scheme)
            } else {
                Err("expected hmac-sha256 or ed25519".into())
            }
        })
}

struct Printer {
    started: Instant,
    bar: Mutex<Option<ProgressBar>>,
}

impl Printer {
    fn stamp(&self) -> String {
        format!("{:>7.3}s", self.started.elapsed().as_secs_f64())
    }
}

impl Narrator for Printer {
    fn step(&self, title: &str) {
        println!("\n{} {title}", self.stamp());
    }

    fn say(&self, line: &str) {
        println!("{}   {line}", self.stamp());
    }

    fn progress(&self, percent: u8, stage: Option<&str>) {
        let Ok(mut bar) = self.bar.lock() else { return };
        let bar = bar.get_or_insert_with(|| {
            let pb = ProgressBar::new(100);
            if let Ok(style) = ProgressStyle::with_template("           [{bar:40}] {pos:>3}% {msg}")
            {
                pb.set_style(style.progress_chars("=> "));
            }
            pb
        });
        bar.set_position(u64::from(percent));
        bar.set_message(stage.unwrap_or("").to_owned());
    }

    fn progress_done(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let printer = Printer {
        started: Instant::now(),
        bar: Mutex::new(None),
    };
    println!("FixMyPrint kit demo: the 3DIAX seed story, over HTTPS, with a real broken model");
    let original = generate::broken_model(args.seed, args.facets);
    let original_path = args.out.join("original.stl");
    std::fs::write(&original_path, &original)?;
    printer.say(&format!(
        "generated {} ({} bytes): float-noise soup, flipped facets, an inside-out shell, wrong normals, holes, duplicates, degenerates, noise shells",
        original_path.display(),
        original.len()
    ));

    let stack = Stack::start(StackOptions::default()).await?;
    printer.say(&format!(
        "broker mock at {}, FixMyPrint at {} (TLS with a generated CA, SQLite in {})",
        stack.broker.base_url(),
        stack.provider.base_url(),
        stack.dir().display()
    ));
    let outcome = story::play(
        &stack,
        "gareth.stl",
        original,
        args.signature_scheme,
        &printer,
    )
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            stack.shutdown().await;
            return Err(e.into());
        }
    };

    let repaired_path = args.out.join("repaired.stl");
    std::fs::write(&repaired_path, &outcome.repaired)?;
    let report_path = args.out.join("report.json");
    let report = outcome
        .job
        .report
        .clone()
        .unwrap_or(serde_json::Value::Null);
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)?;
    // The repair picture, as Gareth sees it at the broker next to the new version.
    let picture_path = args.out.join("picture.png");
    let picture = match &outcome.job.result {
        Some(v) => outcome.gareth.client.report(&v.model_id, v.version).await,
        None => Err(broker_mock::client::ClientError::Unexpected {
            status: 0,
            body: "the completed job names no new version".into(),
        }),
    };
    let picture_path = match picture {
        Ok(png) => {
            std::fs::write(&picture_path, png)?;
            Some(picture_path)
        }
        Err(e) => {
            printer.say(&format!("no repair picture: {e}"));
            None
        }
    };

    printer.step("7. Checking what Gareth got");
    // Repairing the result again must find nothing to do: it is already printable.
    let check = heal::repair(&outcome.repaired, &RepairOptions::default())?.report;
    printer.say(&format!(
        "{} facets, {} shells, watertight: {}, winding consistent: {}, volume {:.2}",
        check.output_facets, check.shells, check.watertight, check.winding_consistent, check.volume
    ));
    printer.say(&format!(
        "wrote {}, {} and {}",
        original_path.display(),
        repaired_path.display(),
        report_path.display()
    ));
    if let Some(path) = &picture_path {
        printer.say(&format!(
            "the repair picture (before and after, changes in colour): {}",
            path.display()
        ));
    }
    stack.shutdown().await;
    if !(check.watertight && check.winding_consistent && check.volume > 0.0) {
        return Err("the repaired model is not watertight, consistently wound and outward".into());
    }
    println!("\n{} the story is complete", printer.stamp());
    Ok(())
}
