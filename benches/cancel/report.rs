//! Figures, their ratios to the baselines of the same run, the targets they
//! are held to, and the markdown that `make bench` prints and writes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::observe::TimedOut;

/// A duration that was measured, or a wait that hit its deadline.
pub type Measured = Result<Duration, TimedOut>;

pub fn secs(m: &Measured) -> String {
    match m {
        Ok(d) => format!("{:.1} s", d.as_secs_f64()),
        Err(t) => format!("> {:.0} s (timed out: {})", t.after.as_secs_f64(), t.last),
    }
}

pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    // Cached reads take well under a millisecond.
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// `a / b`, when both were measured.
pub fn ratio(a: &Measured, b: &Measured) -> Option<f64> {
    match (a, b) {
        (Ok(a), Ok(b)) if b.as_secs_f64() > 0.0 => Some(a.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    }
}

pub fn show_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"))
}

/// Nearest-rank percentile of samples (`p` in 0..=100).
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The whole output: sections of markdown and the PASS/MISS lines.
#[derive(Default)]
pub struct Report {
    body: String,
    checks: Vec<(bool, String)>,
}

impl Report {
    pub fn heading(&mut self, title: &str) {
        let _ = write!(self.body, "\n## {title}\n\n");
    }

    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "{text}\n");
    }

    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.body, "| {} |", header.join(" | "));
        let _ = writeln!(
            self.body,
            "|{}|",
            header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        for r in rows {
            let _ = writeln!(self.body, "| {} |", r.join(" | "));
        }
        self.body.push('\n');
    }

    /// A target: passes when `value` is known and within `limit`.
    pub fn target(&mut self, what: &str, value: Option<f64>, limit: f64, unit: &str) {
        let pass = value.is_some_and(|v| v <= limit);
        let shown = value.map_or_else(|| "not measured".to_string(), |v| format!("{v:.2}{unit}"));
        self.checks
            .push((pass, format!("{what}: {shown} (target ≤ {limit}{unit})")));
    }

    /// A target with a floor: passes when `value` is known and at least `floor`.
    pub fn target_at_least(&mut self, what: &str, value: Option<f64>, floor: f64, unit: &str) {
        let pass = value.is_some_and(|v| v >= floor);
        let shown = value.map_or_else(|| "not measured".to_string(), |v| format!("{v:.2}{unit}"));
        self.checks
            .push((pass, format!("{what}: {shown} (target ≥ {floor}{unit})")));
    }

    pub fn markdown(&self) -> String {
        let mut out = self.body.clone();
        out.push_str("\n## Targets\n\n```\n");
        for (pass, line) in &self.checks {
            let _ = writeln!(out, "{} {line}", if *pass { "PASS" } else { "MISS" });
        }
        out.push_str("```\n");
        out
    }
}
