//! The README's first command: the demo plays the whole story and writes its four files.

use std::process::Command;

#[test]
fn the_demo_plays_the_story_and_writes_its_files() {
    demo_plays_the_story(&["--facets", "60000"]);
}

/// The same story with ed25519 signatures (a smaller model: the healing is the same).
#[test]
fn the_demo_plays_the_story_with_ed25519() {
    let stdout = demo_plays_the_story(&["--facets", "8000", "--signature-scheme", "ed25519"]);
    assert!(stdout.contains("no secret is shared"), "{stdout}");
    assert!(stdout.contains("EdDSA"), "{stdout}");
}

fn demo_plays_the_story(args: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .arg("--out")
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "1. FixMyPrint registers",
        "2. Gareth",
        "3. Gareth signs up",
        "5. Gareth retries",
        "6. Gareth is notified",
        "the story is complete",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    for file in ["original.stl", "repaired.stl", "report.json", "picture.png"] {
        let meta = std::fs::metadata(out_dir.path().join(file)).unwrap();
        assert!(meta.len() > 0, "{file} is empty");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["watertight"], true, "{report}");
    let picture = std::fs::read(out_dir.path().join("picture.png")).unwrap();
    assert!(picture.starts_with(&diax_sdk::wire::PNG_SIGNATURE));
    assert!(
        stdout.contains("picture.png"),
        "picture path not printed:\n{stdout}"
    );
    stdout.into_owned()
}

#[test]
fn a_failing_demo_says_why_and_exits_non_zero() {
    // An output path that cannot be a directory.
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--out")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo failed: cannot create"));
}
