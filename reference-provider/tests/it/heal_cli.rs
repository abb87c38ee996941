//! The `fixmyprint repair` command: exit codes, files, report, quiet/json modes.
use std::process::Command;

use fixmyprint::heal::generate;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fixmyprint"))
}

#[test]
fn heal_repairs_and_writes_report() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out, rep) = (
        dir.path().join("in.stl"),
        dir.path().join("out.stl"),
        dir.path().join("r.json"),
    );
    std::fs::write(&inp, generate::broken_model(1, 20_000)).unwrap();
    let o = bin()
        .arg("repair")
        .arg(&inp)
        .arg(&out)
        .arg("--report")
        .arg(&rep)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Not a terminal: no progress bar, nothing on stderr.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("watertight") && summary.contains("4 shell(s)"),
        "{summary}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(report["watertight"], true);
    let stl = std::fs::read(&out).unwrap();
    let n = report["output_facets"].as_u64().unwrap() as usize;
    assert_eq!(stl.len(), 84 + 50 * n);
    assert_eq!(
        report["stages"]["write"]["bytes"].as_u64().unwrap() as usize,
        stl.len()
    );
}

#[test]
fn heal_json_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    std::fs::write(&inp, generate::broken_model(2, 5_000)).unwrap();
    let o = bin()
        .args(["repair", "--json"])
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shells"], 4);
    let o = bin()
        .args(["repair", "--quiet", "--max-hole-edges", "3"])
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn heal_bad_input_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    let mut b = generate::broken_model(3, 2_000);
    b.truncate(b.len() - 7);
    std::fs::write(&inp, &b).unwrap();
    let o = bin().arg("repair").arg(&inp).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("truncated") && err.contains("byte offset"),
        "{err}"
    );
    assert!(!out.exists(), "no output on failure");
    let o = bin()
        .arg("repair")
        .arg(dir.path().join("nope.stl"))
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn heal_nothing_printable_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    // 100 separate triangles, far apart.
    let mut b = vec![0u8; 84];
    b[80..84].copy_from_slice(&100u32.to_le_bytes());
    for i in 0..100 {
        let x = i as f32 * 10.0;
        b.extend_from_slice(&[0u8; 12]);
        for p in [[x, 0.0, 0.0], [x + 1.0, 0.0, 0.0], [x, 1.0, 0.0]] {
            for c in p {
                b.extend_from_slice(&f32::to_le_bytes(c));
            }
        }
        b.extend_from_slice(&[0u8; 2]);
    }
    std::fs::write(&inp, &b).unwrap();
    let o = bin().arg("repair").arg(&inp).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("100 facets") && err.contains("--keep-tiny-shells"),
        "{err}"
    );
    assert!(!out.exists(), "no output on failure");
    let o = bin()
        .args(["repair", "--quiet", "--keep-tiny-shells"])
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap().len() >= 84 + 50 * 100);
}

#[test]
fn heal_empty_ascii_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    std::fs::write(&inp, "solid empty\nendsolid empty\n").unwrap();
    let o = bin().arg("repair").arg(&inp).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("empty ASCII STL") && !err.contains("binary"),
        "{err}"
    );
}

#[test]
fn heal_deadline_exits_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    std::fs::write(&inp, generate::broken_model(4, 2_000)).unwrap();
    let o = bin()
        .args(["repair", "--deadline", "0"])
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("deadline"), "{err}");
    assert!(!out.exists(), "no output on failure");
    let o = bin()
        .args(["repair", "--quiet", "--deadline", "3600"])
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn heal_summary_names_why_not_watertight() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    let holes = generate::Defects {
        holes: 3,
        ..generate::Defects::none()
    };
    std::fs::write(&inp, generate::model(1, 20_000, &holes).stl).unwrap();
    let o = bin()
        .arg("repair")
        .arg(&inp)
        .arg(&out)
        .arg("--no-fill-holes")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(
        summary.contains("NOT watertight: 3 of 3 hole loops left open (hole filling is off)"),
        "{summary}"
    );
    // The same input healed in full: no reason given.
    let o = bin().arg("repair").arg(&inp).arg(&out).output().unwrap();
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains(", watertight,") && !summary.contains("NOT"),
        "{summary}"
    );
}
