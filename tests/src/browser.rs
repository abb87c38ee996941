//! A real headless browser for the tests that look at pages as a person would: Debian's
//! Chromium, run once per page (`--screenshot` or `--dump-dom`), with a fresh profile in a
//! temporary directory, a time limit, and its whole process group killed when it is done,
//! times out or is dropped, so no browser process outlives a test.
//!
//! Chromium is found at `$CHROMIUM`, then `/usr/bin/chromium`, then `chromium` or
//! `chromium-browser` on the `PATH`; when it is missing every call fails with
//! [`BrowserError::Missing`], which names the Debian package to install (`.ci/run` installs
//! it). Certificate errors are ignored, since the stack's servers use a CA generated for the
//! test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Why a page could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium on this machine.
    #[error(
        "no Chromium found ($CHROMIUM, /usr/bin/chromium, chromium on the PATH): install the Debian package `chromium` (apt-get install chromium)"
    )]
    Missing,
    /// The browser could not be started, or its files not handled.
    #[error("chromium: {0}")]
    Io(#[from] std::io::Error),
    /// The browser ran past its time limit and was killed.
    #[error("chromium did not finish {what} within {limit:?}")]
    Timeout {
        /// What it was doing.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// The browser exited without doing what was asked.
    #[error("chromium failed ({status}) on {what}: {stderr}")]
    Failed {
        /// What it was doing.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// The screenshot is not a PNG we can read.
    #[error("screenshot: {0}")]
    Png(#[from] png::DecodingError),
}

/// A decoded screenshot: 8-bit RGB, row-major.
#[derive(Debug, Clone)]
pub struct Screenshot {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `3 × width × height` bytes.
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// The pixel at (`x`, `y`).
    ///
    /// # Panics
    /// Outside the image.
    #[must_use]
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "({x}, {y}) outside");
        let i = 3 * (y * self.width + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Decodes a PNG (RGB or RGBA, 8 bits; alpha is dropped).
    ///
    /// # Errors
    /// [`BrowserError::Png`].
    pub fn decode(png_bytes: &[u8]) -> Result<Self, BrowserError> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info()?;
        let size = reader.output_buffer_size().ok_or_else(|| {
            BrowserError::Io(std::io::Error::other("screenshot too large to decode"))
        })?;
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf)?;
        buf.truncate(info.buffer_size());
        let (width, height) = (info.width as usize, info.height as usize);
        let rgb = match info.color_type {
            png::ColorType::Rgb => buf,
            png::ColorType::Rgba => buf
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
            png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => buf
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0]])
                .collect(),
            png::ColorType::Indexed => {
                return Err(BrowserError::Io(std::io::Error::other(
                    "indexed PNG left unexpanded",
                )));
            }
        };
        Ok(Self { width, height, rgb })
    }
}

/// Headless Chromium.
#[derive(Debug, Clone)]
pub struct Browser {
    exe: PathBuf,
    /// Time limit of one run.
    pub timeout: Duration,
}

impl Browser {
    /// Finds Chromium (see the module documentation).
    ///
    /// # Errors
    /// [`BrowserError::Missing`], naming the package to install.
    pub fn find() -> Result<Self, BrowserError> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.push(PathBuf::from("/usr/bin/chromium"));
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                for name in ["chromium", "chromium-browser"] {
                    candidates.push(dir.join(name));
                }
            }
        }
        let exe = candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or(BrowserError::Missing)?;
        Ok(Self {
            exe,
            timeout: Duration::from_secs(60),
        })
    }

    /// Loads `url` in a `width` × `height` window, lets it run scripts and fetches for up to
    /// `settle` of the browser's virtual time (it skips idle waits, so this costs only what
    /// the page really does), and returns the screenshot of the window.
    ///
    /// # Errors
    /// [`BrowserError`].
    pub async fn screenshot(
        &self,
        url: &str,
        width: u32,
        height: u32,
        settle: Duration,
    ) -> Result<Screenshot, BrowserError> {
        let dir = tempfile::Builder::new().prefix("e2e-chromium-").tempdir()?;
        let out = dir.path().join("screenshot.png");
        let mut screenshot_arg = std::ffi::OsString::from("--screenshot=");
        screenshot_arg.push(&out);
        self.run(
            dir.path(),
            &format!("a screenshot of {url}"),
            width,
            height,
            settle,
            &[screenshot_arg, url.into()],
        )
        .await?;
        let bytes = std::fs::read(&out)?;
        Screenshot::decode(&bytes)
    }

    /// Loads `url` as [`screenshot`](Self::screenshot) does and returns the DOM after its
    /// scripts ran, serialised as HTML.
    ///
    /// # Errors
    /// [`BrowserError`].
    pub async fn dump_dom(&self, url: &str, settle: Duration) -> Result<String, BrowserError> {
        let dir = tempfile::Builder::new().prefix("e2e-chromium-").tempdir()?;
        let stdout = self
            .run(
                dir.path(),
                &format!("the DOM of {url}"),
                1280,
                1024,
                settle,
                &["--dump-dom".into(), url.into()],
            )
            .await?;
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// One browser run with a fresh profile in `dir`; returns its standard output. The browser
    /// is waited for on a blocking thread (polling its exit every 20 ms up to the time limit).
    async fn run(
        &self,
        dir: &Path,
        what: &str,
        width: u32,
        height: u32,
        settle: Duration,
        args: &[std::ffi::OsString],
    ) -> Result<Vec<u8>, BrowserError> {
        use std::os::unix::process::CommandExt as _;
        let mut profile = std::ffi::OsString::from("--user-data-dir=");
        profile.push(dir.join("profile"));
        let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--ignore-certificate-errors",
            // Each frame waits for its raster work (image decoding included), so a
            // screenshot taken when the virtual-time budget ends shows every image the page
            // had loaded by then, however busy the machine is.
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--virtual-time-budget={}", settle.as_millis()))
        .arg(profile)
        .args(args)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        // Its own process group, so its helpers (zygote, renderer, GPU) go with it.
        .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BrowserError::Missing
            } else {
                BrowserError::Io(e)
            }
        })?;
        let limit = self.timeout;
        let status = tokio::task::spawn_blocking(move || {
            let group = ProcessGroup(Some(child.id()));
            let deadline = std::time::Instant::now() + limit;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(Some(status)),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) => break Ok(None),
                    Err(e) => break Err(e),
                }
            };
            drop(group);
            // Reap the main process if it was killed.
            let _ = child.wait();
            status
        })
        .await
        .map_err(|e| BrowserError::Io(std::io::Error::other(e)))??;
        let Some(status) = status else {
            return Err(BrowserError::Timeout {
                what: what.to_owned(),
                limit,
            });
        };
        if !status.success() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(BrowserError::Failed {
                what: what.to_owned(),
                status,
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
        Ok(std::fs::read(&out_path)?)
    }
}

/// Kills a process group (`kill -KILL -- -PGID`) when dropped: whatever of the browser is
/// still running once its main process is done, timed out, or the test gave up on it.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group is gone already when the browser exited cleanly: that failure is fine.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
