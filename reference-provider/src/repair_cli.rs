//! `fixmyprint repair IN.stl OUT.stl`: heal an STL file and write binary STL.
//!
//! Exit status: 0 on success, 2 when the input is not a usable STL file or nothing printable
//! would remain (one line on stderr naming what is wrong and where), 3 when `--deadline`
//! passed, 1 on I/O errors. A progress bar is drawn on stderr only when
//! stderr is a terminal and `--quiet` is not given. `--json` prints the report on stdout;
//! `--report FILE` writes it to a file. `--picture R.png` and `--html R.html` draw the model
//! before and after with what the repair changed marked ([`crate::heal::picture`]); a picture that
//! cannot be made or written is one line on stderr and exit status 1, after the repaired STL
//! and the report were written.
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::heal::picture::{Picture, PictureError, PictureOptions};
use crate::heal::{self, HealError, RepairOptions, Stage};

/// Arguments of `fixmyprint repair`.
#[derive(Debug, Clone, Args)]
pub struct RepairArgs {
    /// Input STL file (binary or ASCII).
    pub input: PathBuf,
    /// Output file (binary STL).
    pub output: PathBuf,
    /// Write the JSON repair report to this file.
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the JSON report on stdout instead of the summary line.
    #[arg(long)]
    pub json: bool,
    /// Absolute weld tolerance in model units, for every corner (default: chosen from the
    /// data, see --weld-relative).
    #[arg(long, value_name = "UNITS", conflicts_with = "weld_relative")]
    pub weld_tolerance: Option<f32>,
    /// Upper bound of the automatic weld, as a fraction of the model's size (the diagonal of
    /// the box of its facets, less stray ones far away; each corner's limit is further cut to
    /// a quarter of its facet's shortest edge).
    #[arg(long, value_name = "FRACTION", default_value_t = RepairOptions::default().weld_relative_tolerance)]
    pub weld_relative: f32,
    /// Weld only bit-identical vertices.
    #[arg(long)]
    pub exact_weld_only: bool,
    /// Do not stitch open seams (boundary edges lying along other boundary edges).
    #[arg(long)]
    pub no_stitch: bool,
    /// The largest gap a stitch bridges, as a fraction of the model's size (as for
    /// --weld-relative).
    #[arg(long, value_name = "FRACTION", default_value_t = RepairOptions::default().stitch_relative)]
    pub stitch_relative: f32,
    /// Keep degenerate (zero-area) facets; repeated-vertex facets are always dropped.
    #[arg(long)]
    pub keep_degenerate: bool,
    /// Keep duplicate facets.
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Do not make the winding consistent.
    #[arg(long)]
    pub no_winding: bool,
    /// Do not flip inward-facing shells.
    #[arg(long)]
    pub no_orient: bool,
    /// Keep tiny shells.
    #[arg(long)]
    pub keep_tiny_shells: bool,
    /// A shell is tiny below this fraction of the model's size (as for --weld-relative)…
    #[arg(long, value_name = "FRACTION", default_value_t = RepairOptions::default().tiny_shell_ratio)]
    pub tiny_shell_ratio: f32,
    /// …and with at most this many facets (shells under 4 facets are always tiny).
    #[arg(long, value_name = "N", default_value_t = RepairOptions::default().tiny_shell_max_facets)]
    pub tiny_shell_max_facets: u32,
    /// …unless the shells that would go hold more than this fraction of the surface area:
    /// then they are parts of the model and are kept, but for debris under a tenth of a
    /// typical one's area (1 turns this off).
    #[arg(long, value_name = "FRACTION", default_value_t = RepairOptions::default().tiny_shell_max_area_share)]
    pub tiny_shell_max_area_share: f32,
    /// Do not fill holes.
    #[arg(long)]
    pub no_fill_holes: bool,
    /// Leave holes with more boundary edges than this open.
    #[arg(long, value_name = "EDGES", default_value_t = RepairOptions::default().max_hole_edges)]
    pub max_hole_edges: u32,
    /// Refuse inputs larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = RepairOptions::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// Refuse inputs with more facets than this.
    #[arg(long, value_name = "N", default_value_t = RepairOptions::default().max_facets)]
    pub max_facets: u64,
    /// Give up (exit 3) when the repair takes longer than this many seconds.
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<f64>,
    /// Draw the model before and after the repair, with what changed marked, as PNG.
    #[arg(long, value_name = "PICTURE.png")]
    pub picture: Option<PathBuf>,
    /// The same picture in one self-contained HTML page, with the report's counts.
    #[arg(long, value_name = "REPORT.html")]
    pub html: Option<PathBuf>,
    /// Draw no picture of models with more facets than this.
    #[arg(long, value_name = "N", default_value_t = PictureOptions::default().max_facets)]
    pub picture_max_facets: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl RepairArgs {
    /// The library options these arguments select (a `--deadline` counts from this call).
    pub fn options(&self) -> RepairOptions {
        RepairOptions {
            max_file_bytes: self.max_file_bytes,
            max_facets: self.max_facets,
            weld: !self.exact_weld_only,
            weld_tolerance: self.weld_tolerance,
            weld_relative_tolerance: self.weld_relative,
            stitch: !self.no_stitch,
            stitch_relative: self.stitch_relative,
            remove_degenerate: !self.keep_degenerate,
            remove_duplicates: !self.keep_duplicates,
            fix_winding: !self.no_winding,
            fix_orientation: !self.no_orient,
            remove_tiny_shells: !self.keep_tiny_shells,
            tiny_shell_ratio: self.tiny_shell_ratio,
            tiny_shell_max_facets: self.tiny_shell_max_facets,
            tiny_shell_max_area_share: self.tiny_shell_max_area_share,
            fill_holes: !self.no_fill_holes,
            max_hole_edges: self.max_hole_edges,
            deadline: self.deadline.and_then(|s| {
                let d = std::time::Duration::try_from_secs_f64(s.max(0.0)).ok()?;
                std::time::Instant::now().checked_add(d)
            }),
        }
    }
}

/// Run `fixmyprint repair`.
pub fn run(args: RepairArgs) -> ExitCode {
    if let Some(n) = args.threads {
        // Fails only if a pool exists already; then the existing one is used.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    match repair(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                CliError::Heal(_, HealError::Io { .. })
                | CliError::Output(..)
                | CliError::Picture(..) => ExitCode::from(1),
                CliError::Heal(_, HealError::DeadlineExceeded { .. }) => ExitCode::from(3),
                CliError::Heal(..) => ExitCode::from(2),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{}: {}", .0, .1)]
    Heal(String, HealError),
    #[error("{0}: {1}")]
    Output(String, std::io::Error),
    #[error("no picture of {0}: {1} (the repaired model was written)")]
    Picture(String, PictureError),
}

fn repair(args: &RepairArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let options = args.options();
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(Stage::ALL.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.enable_steady_tick(std::time::Duration::from_millis(100));
        b
    });
    let progress = |s: Stage| {
        if let Some(b) = &bar {
            b.set_position(Stage::ALL.iter().position(|x| *x == s).unwrap_or(0) as u64);
            b.set_message(s.name());
        }
    };
    let input = args.input.display().to_string();
    progress(Stage::Parse);
    let soup = heal::stl::parse_file(&args.input, &options)
        .map_err(|e| CliError::Heal(input.clone(), e))?;
    // The "before" views are drawn from the input before the repair consumes it.
    let mut picture = None;
    if args.picture.is_some() || args.html.is_some() {
        let options = PictureOptions {
            max_facets: args.picture_max_facets,
        };
        picture = Some(Picture::new(&soup.positions, &options).map(|mut p| {
            p.draw_before(&soup.positions);
            p
        }));
    }
    let mut repaired = heal::repair_soup(soup, &options, &progress)
        .map_err(|e| CliError::Heal(input.clone(), e))?;
    progress(Stage::Write);
    let out_name = args.output.display().to_string();
    let out_err = |e| CliError::Output(out_name.clone(), e);
    let file = std::fs::File::create(&args.output).map_err(out_err)?;
    repaired
        .write_stl(BufWriter::with_capacity(1 << 20, file))
        .map_err(out_err)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = &repaired.report;
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    if let Some(path) = &args.report {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| CliError::Output(path.display().to_string(), e))?;
    }
    let drawn = picture.map(|p| p.map(|p| p.finish(&repaired)));
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(stdout, "{json}");
    } else if !args.quiet {
        let _ = writeln!(
            stdout,
            "{} -> {}: {} -> {} facets, {} shell(s), {} hole(s) filled, {}, volume {:.6}, {:.3} s",
            args.input.display(),
            args.output.display(),
            report.input_facets,
            report.output_facets,
            report.shells,
            report.holes_filled,
            watertight_summary(report),
            report.volume,
            started.elapsed().as_secs_f64()
        );
    }
    match drawn {
        None => Ok(()),
        Some(Err(e)) => Err(CliError::Picture(input, e)),
        Some(Ok(image)) => {
            let write = |path: &PathBuf, bytes: &[u8]| {
                std::fs::write(path, bytes)
                    .map_err(|e| CliError::Output(path.display().to_string(), e))
            };
            if let Some(path) = &args.picture {
                write(path, &image.to_png())?;
            }
            if let Some(path) = &args.html {
                let name = args
                    .input
                    .file_name()
                    .map_or(input.clone(), |n| n.to_string_lossy().into_owned());
                write(path, image.to_html(&name, report).as_bytes())?;
            }
            Ok(())
        }
    }
}

/// "watertight", or "NOT watertight: " and every reason the report gives, on one line.
fn watertight_summary(report: &heal::Report) -> String {
    if report.watertight {
        "watertight".to_owned()
    } else if report.not_watertight.is_empty() {
        "NOT watertight".to_owned()
    } else {
        format!("NOT watertight: {}", report.not_watertight.join("; "))
    }
}
