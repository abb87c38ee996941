//! The report's three renderings: human lines, JSON and JUnit XML.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CheckResult, Report, Verdict};

/// Counts of each verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks run.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    provider_url: &'a str,
    passed: bool,
    started_at: i64,
    duration_ms: u64,
    summary: Summary,
    checks: &'a [CheckResult],
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Report {
    /// How many checks passed, failed and were skipped.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let count = |v| self.results.iter().filter(|r| r.verdict == v).count();
        Summary {
            total: self.results.len(),
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            skipped: count(Verdict::Skip),
        }
    }

    /// One line per check (`PASS  name  §section  reason`) and a summary line.
    #[must_use]
    pub fn to_human(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.check.name().len())
            .max()
            .unwrap_or(0);
        let sections = self
            .results
            .iter()
            .map(|r| r.section.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for r in &self.results {
            let _ = writeln!(
                out,
                "{}  {:<width$}  {:<sections$}  {}",
                r.verdict,
                r.check.name(),
                r.section,
                r.reason
            );
        }
        let s = self.summary();
        let _ = writeln!(
            out,
            "{}: {} passed, {} failed, {} skipped of {} checks against {} ({:.1} s)",
            if self.passed() {
                "CONFORMS"
            } else {
                "DOES NOT CONFORM"
            },
            s.passed,
            s.failed,
            s.skipped,
            s.total,
            self.provider_url,
            self.duration_ms as f64 / 1000.0
        );
        out
    }

    /// The report as a JSON document: `{provider_url, passed, started_at, duration_ms,
    /// summary: {total, passed, failed, skipped}, checks: [{name, section, verdict,
    /// reason, duration_ms}]}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let doc = JsonReport {
            provider_url: &self.provider_url,
            passed: self.passed(),
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            summary: self.summary(),
            checks: &self.results,
        };
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The report as JUnit XML: one `<testsuite name="diax-conformance">`, one
    /// `<testcase>` per check (`classname` = the part of the name before the dot), with
    /// `<failure>` or `<skipped>` carrying the reason.
    #[must_use]
    pub fn to_junit(&self) -> String {
        let s = self.summary();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"diax-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            s.total,
            s.failed,
            s.skipped,
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"diax-conformance\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            s.total,
            s.failed,
            s.skipped,
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"provider_url\" value=\"{}\"/></properties>",
            xml_escape(&self.provider_url)
        );
        for r in &self.results {
            let name = r.check.name();
            let class = name.split('.').next().unwrap_or(name);
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(class),
                xml_escape(name),
                r.duration_ms as f64 / 1000.0
            );
            let reason = xml_escape(&r.reason);
            match r.verdict {
                Verdict::Pass => {
                    let _ = writeln!(out, "><system-out>{reason}</system-out></testcase>");
                }
                Verdict::Fail => {
                    let _ = writeln!(
                        out,
                        "><failure message=\"{reason}\">{reason}</failure></testcase>"
                    );
                }
                Verdict::Skip => {
                    let _ = writeln!(out, "><skipped message=\"{reason}\"/></testcase>");
                }
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}
