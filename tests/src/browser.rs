//! Headless Chromium (Debian's `chromium`) as a page's reader: the DOM
//! after its scripts ran, and a screenshot, each taken in a namespace.

use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// Runs chromium headless in `ns` on `url` with `args` more, its scripts
/// given `budget_ms` of virtual time (fetches and timers run; the clock
/// jumps over waits).
fn chromium(
    ns: &Netns,
    url: &str,
    profile: &Path,
    budget_ms: u32,
    args: &[&str],
) -> Result<Output> {
    let out = ns
        .command("chromium")
        .args([
            "--headless=new",
            // Root in a namespace: the sandbox needs user namespaces that
            // this test does not set up; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .output()
        .context("running chromium (Debian package chromium)")?;
    if !out.status.success() {
        bail!(
            "chromium {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The page's DOM once its scripts had `budget_ms` to run.
pub fn dom(ns: &Netns, url: &str, profile: &Path, budget_ms: u32) -> Result<String> {
    let out = chromium(ns, url, profile, budget_ms, &["--dump-dom"])?;
    Ok(String::from_utf8(out.stdout)?)
}

/// A `width` × `height` screenshot of the page, written to `png`.
pub fn screenshot(
    ns: &Netns,
    url: &str,
    profile: &Path,
    budget_ms: u32,
    (width, height): (u32, u32),
    png: &Path,
) -> Result<()> {
    chromium(
        ns,
        url,
        profile,
        budget_ms,
        &[
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", png.display()),
        ],
    )?;
    Ok(())
}

/// How many pixels of the PNG at `path` are within `tolerance` of `rgb` in
/// every channel.
pub fn pixels_near(path: &Path, rgb: [u8; 3], tolerance: u8) -> Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    if channels < 3 {
        bail!("{} is not a colour image", path.display());
    }
    Ok(buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tolerance))
        .count())
}
