//! The `diax` command, run as a process.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use diax_sdk::Secret;

const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TS: &str = "1614265330";
const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn diax(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_diax"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diax starts");
    // The command may exit without reading its input (a body file, bad arguments): a
    // broken pipe here is fine.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    child.wait_with_output().expect("diax runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Bad input: exit 2, exactly one line on stderr, nothing on stdout.
fn assert_bad_input(o: &Output, mentions: &str) {
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(
        err.contains(mentions),
        "{err:?} should mention {mentions:?}"
    );
    assert!(o.stdout.is_empty());
}

fn vector_args<'a>(cmd: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        cmd,
        "--secret",
        VECTOR_SECRET,
        "--id",
        VECTOR_ID,
        "--timestamp",
        VECTOR_TS,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn sign_reproduces_the_published_vector_from_stdin_and_file() {
    let o = diax(&vector_args("sign", &[]), VECTOR_BODY);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), VECTOR_SIG);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body.json");
    std::fs::write(&file, VECTOR_BODY).expect("write body");
    let path = file.to_str().expect("utf-8 path");
    let o = diax(&vector_args("sign", &["--body-file", path]), b"ignored");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), VECTOR_SIG);
}

#[test]
fn verify_accepts_the_vector_and_explains_refusals() {
    let ok = diax(
        &vector_args("verify", &["--signature", VECTOR_SIG, "--now", VECTOR_TS]),
        VECTOR_BODY,
    );
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(stdout(&ok), "valid");

    let tampered = diax(
        &vector_args("verify", &["--signature", VECTOR_SIG, "--now", VECTOR_TS]),
        br#"{"test": 2432232315}"#,
    );
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        stdout(&tampered).contains("no signature matches"),
        "{tampered:?}"
    );

    let stale = diax(
        &vector_args(
            "verify",
            &["--signature", VECTOR_SIG, "--now", "1614265631"],
        ),
        VECTOR_BODY,
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(stdout(&stale).contains("301 s old"), "{stale:?}");

    let future = diax(
        &vector_args(
            "verify",
            &["--signature", VECTOR_SIG, "--now", "1614265029"],
        ),
        VECTOR_BODY,
    );
    assert_eq!(future.status.code(), Some(1));
    assert!(stdout(&future).contains("in the future"), "{future:?}");

    let tolerant = diax(
        &vector_args(
            "verify",
            &[
                "--signature",
                VECTOR_SIG,
                "--now",
                "1614265631",
                "--tolerance",
                "301",
            ],
        ),
        VECTOR_BODY,
    );
    assert_eq!(tolerant.status.code(), Some(0), "{tolerant:?}");

    // Against the real clock the 2021 vector is long stale.
    let now = diax(
        &vector_args("verify", &["--signature", VECTOR_SIG]),
        VECTOR_BODY,
    );
    assert_eq!(now.status.code(), Some(1));

    let garbage = diax(
        &vector_args("verify", &["--signature", "v2,abc", "--now", VECTOR_TS]),
        VECTOR_BODY,
    );
    assert_eq!(garbage.status.code(), Some(1));
    assert!(
        stdout(&garbage).contains("no v1 or v1a signature"),
        "{garbage:?}"
    );
}

#[test]
fn binary_bodies_round_trip() {
    let secret = Secret::generate().expose();
    let body: Vec<u8> = (0..=255u8).rev().collect();
    let sign = diax(
        &[
            "sign",
            "--secret",
            &secret,
            "--id",
            "msg_bin",
            "--timestamp",
            "1700000000",
        ],
        &body,
    );
    assert!(sign.status.success(), "{sign:?}");
    let sig = stdout(&sign);
    let args = [
        "verify",
        "--secret",
        &secret,
        "--id",
        "msg_bin",
        "--timestamp",
        "1700000000",
        "--signature",
        &sig,
        "--now",
        "1700000010",
    ];
    assert_eq!(diax(&args, &body).status.code(), Some(0));
    assert_eq!(diax(&args, &body[1..]).status.code(), Some(1));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    assert_bad_input(
        &diax(
            &[
                "sign",
                "--secret",
                "nope",
                "--id",
                "msg_1",
                "--timestamp",
                "1",
            ],
            b"",
        ),
        "--secret",
    );
    assert_bad_input(
        &diax(
            &[
                "sign",
                "--secret",
                "whsec_c2hvcnQ=",
                "--id",
                "msg_1",
                "--timestamp",
                "1",
            ],
            b"",
        ),
        "at least 16",
    );
    assert_bad_input(
        &diax(
            &[
                "sign",
                "--secret",
                VECTOR_SECRET,
                "--id",
                "msg_1",
                "--timestamp",
                "soon",
            ],
            b"",
        ),
        "--timestamp",
    );
    assert_bad_input(
        &diax(
            &[
                "sign",
                "--secret",
                VECTOR_SECRET,
                "--id",
                "msg_1",
                "--timestamp",
                "-5",
            ],
            b"",
        ),
        "--timestamp",
    );
    assert_bad_input(
        &diax(
            &[
                "sign",
                "--secret",
                VECTOR_SECRET,
                "--id",
                "bad id",
                "--timestamp",
                "1",
            ],
            b"",
        ),
        "--id",
    );
    assert_bad_input(
        &diax(
            &vector_args("sign", &["--body-file", "/nonexistent/diax/body"]),
            b"",
        ),
        "--body-file",
    );
    assert_bad_input(
        &diax(
            &vector_args("verify", &["--signature", VECTOR_SIG, "--now", "yesterday"]),
            VECTOR_BODY,
        ),
        "--now",
    );
    assert_bad_input(
        &diax(
            &vector_args("verify", &["--signature", VECTOR_SIG, "--tolerance", "-1"]),
            VECTOR_BODY,
        ),
        "--tolerance",
    );
    assert_bad_input(&diax(&["sign", "--secret", VECTOR_SECRET], b""), "--id");
    assert_bad_input(&diax(&["frobnicate"], b""), "frobnicate");
    let token_args = |ttl: &'static str| {
        [
            "token",
            "issue",
            "--secret",
            VECTOR_SECRET,
            "--kid",
            "key_1",
            "--iss",
            "prv_x",
            "--sub",
            "acc_1",
            "--aud",
            "diax",
            "--ttl",
            ttl,
        ]
    };
    assert_bad_input(&diax(&token_args("0"), b""), "--ttl");
    assert_bad_input(&diax(&token_args("ten"), b""), "--ttl");
}

#[test]
fn tokens_issue_and_verify() {
    let secret = Secret::generate().expose();
    let issue = diax(
        &[
            "token",
            "issue",
            "--secret",
            &secret,
            "--kid",
            "key_7",
            "--iss",
            "prv_fix",
            "--sub",
            "acc_gareth",
            "--aud",
            "diax",
            "--ttl",
            "600",
            "--now",
            "1700000000",
        ],
        b"",
    );
    assert!(issue.status.success(), "{issue:?}");
    let token = stdout(&issue);
    assert_eq!(token.split('.').count(), 3);

    let verify = |kid: &str, aud: &str, now: &str| {
        diax(
            &[
                "token", "verify", "--secret", &secret, "--kid", kid, "--iss", "prv_fix", "--aud",
                aud, "--now", now, &token,
            ],
            b"",
        )
    };
    let ok = verify("key_7", "diax", "1700000100");
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let claims: serde_json::Value = serde_json::from_str(&stdout(&ok)).expect("claims JSON");
    assert_eq!(claims["sub"], "acc_gareth");
    assert_eq!(claims["iss"], "prv_fix");
    assert_eq!(claims["aud"], "diax");
    assert_eq!(claims["iat"], 1_700_000_000);
    assert_eq!(claims["exp"], 1_700_000_600);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    let expired = verify("key_7", "diax", "1700000700");
    assert_eq!(expired.status.code(), Some(1));
    assert!(stdout(&expired).contains("expired"), "{expired:?}");
    let wrong_aud = verify("key_7", "other", "1700000100");
    assert_eq!(wrong_aud.status.code(), Some(1));
    assert!(stdout(&wrong_aud).contains("audience"), "{wrong_aud:?}");
    let wrong_kid = verify("key_8", "diax", "1700000100");
    assert_eq!(wrong_kid.status.code(), Some(1));
    assert!(
        stdout(&wrong_kid).contains("no active key with id \"key_7\""),
        "{wrong_kid:?}"
    );

    // Issued against the real clock by default.
    let now_issue = diax(
        &[
            "token", "issue", "--secret", &secret, "--kid", "key_7", "--iss", "prv_fix", "--sub",
            "acc_1", "--aud", "diax", "--ttl", "60",
        ],
        b"",
    );
    let fresh = stdout(&now_issue);
    let o = diax(
        &[
            "token", "verify", "--secret", &secret, "--kid", "key_7", "--iss", "prv_fix", "--aud",
            "diax", &fresh,
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

#[test]
fn secret_new_prints_fresh_parseable_secrets() {
    let a = diax(&["secret", "new"], b"");
    let b = diax(&["secret", "new"], b"");
    assert!(a.status.success() && b.status.success());
    let (a, b) = (stdout(&a), stdout(&b));
    assert!(a.starts_with("whsec_"));
    assert_ne!(a, b);
    let s = Secret::parse(&a).expect("parses");
    assert_eq!(s.expose(), a);
    assert_eq!(s.expose_bytes().len(), 32);
}

#[test]
fn the_secret_comes_from_a_file_stdin_or_the_environment_not_only_argv() {
    let dir = tempfile::tempdir().expect("dir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{VECTOR_SECRET}\n")).expect("write");
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, VECTOR_BODY).expect("write");
    let path = secret_file.display().to_string();
    let from_file = diax(
        &[
            "sign",
            "--secret-file",
            &path,
            "--id",
            VECTOR_ID,
            "--timestamp",
            VECTOR_TS,
        ],
        VECTOR_BODY,
    );
    assert_eq!(stdout(&from_file), VECTOR_SIG, "{from_file:?}");

    let body = body_file.display().to_string();
    let from_stdin = diax(
        &[
            "sign",
            "--secret-file",
            "-",
            "--body-file",
            &body,
            "--id",
            VECTOR_ID,
            "--timestamp",
            VECTOR_TS,
        ],
        VECTOR_SECRET.as_bytes(),
    );
    assert_eq!(stdout(&from_stdin), VECTOR_SIG, "{from_stdin:?}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_diax"))
        .args(["sign", "--id", VECTOR_ID, "--timestamp", VECTOR_TS])
        .env("DIAX_SECRET", VECTOR_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diax starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(VECTOR_BODY)
        .expect("write");
    let from_env = child.wait_with_output().expect("runs");
    assert_eq!(stdout(&from_env), VECTOR_SIG, "{from_env:?}");

    // Standard input cannot carry both; no secret at all is bad input.
    let both = diax(
        &[
            "sign",
            "--secret-file",
            "-",
            "--id",
            VECTOR_ID,
            "--timestamp",
            VECTOR_TS,
        ],
        VECTOR_BODY,
    );
    assert_bad_input(&both, "--secret-file -");
    let none = diax(
        &["sign", "--id", VECTOR_ID, "--timestamp", VECTOR_TS],
        VECTOR_BODY,
    );
    assert_bad_input(&none, "no secret");
}

#[test]
fn ed25519_keys_sign_verify_and_issue_tokens() {
    let made = diax(&["secret", "new", "--ed25519"], b"");
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let out = stdout(&made);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let (secret, public) = (lines[0], lines[1]);
    let key = diax_sdk::SigningKey::parse(secret).expect("whsk_ parses");
    assert_eq!(key.public_key().to_string(), public);
    let derived = diax(&["secret", "public", "--secret", secret], b"");
    assert_eq!(stdout(&derived), public);

    // Sign with the secret key, verify with the public key; the body decides.
    let signed = diax(
        &[
            "sign",
            "--secret",
            secret,
            "--id",
            "msg_1",
            "--timestamp",
            "1700000000",
        ],
        b"{}",
    );
    assert_eq!(signed.status.code(), Some(0), "{signed:?}");
    let sig = stdout(&signed);
    assert!(sig.starts_with("v1a,"), "{sig}");
    let verify = |key: &str, body: &[u8]| {
        diax(
            &[
                "verify",
                "--secret",
                key,
                "--id",
                "msg_1",
                "--timestamp",
                "1700000000",
                "--signature",
                &sig,
                "--now",
                "1700000000",
            ],
            body,
        )
    };
    assert_eq!(stdout(&verify(public, b"{}")), "valid");
    assert_eq!(stdout(&verify(secret, b"{}")), "valid");
    let tampered = verify(public, b"[]");
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        stdout(&tampered).contains("no signature matches"),
        "{tampered:?}"
    );
    // A v1a signature checked with a shared secret: the wrong scheme, said so.
    let wrong = verify(VECTOR_SECRET, b"{}");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stdout(&wrong).contains("only v1a signatures"), "{wrong:?}");

    // A public key cannot sign or issue; a bad key is bad input.
    let no = diax(
        &["sign", "--secret", public, "--id", "m", "--timestamp", "1"],
        b"",
    );
    assert_bad_input(&no, "cannot sign");
    let no = diax(
        &[
            "token", "issue", "--secret", public, "--kid", "key_1", "--iss", "prv_1", "--sub",
            "acc_1", "--aud", "diax", "--ttl", "60",
        ],
        b"",
    );
    assert_bad_input(&no, "cannot sign");
    assert_bad_input(
        &diax(&["secret", "public", "--secret", "whpk_AAAA"], b""),
        "--secret",
    );
    assert_bad_input(
        &diax(&["secret", "public", "--secret", VECTOR_SECRET], b""),
        "no public key",
    );

    // EdDSA tokens: issued with the secret key, checked with the public key.
    let issued = diax(
        &[
            "token",
            "issue",
            "--secret",
            secret,
            "--kid",
            "key_1",
            "--iss",
            "prv_1",
            "--sub",
            "acc_1",
            "--aud",
            "diax",
            "--ttl",
            "60",
            "--now",
            "1700000000",
        ],
        b"",
    );
    assert_eq!(issued.status.code(), Some(0), "{issued:?}");
    let token = stdout(&issued);
    let check = |key: &str| {
        diax(
            &[
                "token",
                "verify",
                "--secret",
                key,
                "--kid",
                "key_1",
                "--iss",
                "prv_1",
                "--aud",
                "diax",
                "--now",
                "1700000010",
                &token,
            ],
            b"",
        )
    };
    let ok = check(public);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(stdout(&ok).contains("\"sub\":\"acc_1\""));
    let other = diax(&["secret", "new", "--ed25519"], b"");
    let other_public = stdout(&other).lines().nth(1).expect("public").to_owned();
    let bad = check(&other_public);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("bad signature"), "{bad:?}");
    let confused = check(VECTOR_SECRET);
    assert_eq!(confused.status.code(), Some(1));
    assert!(stdout(&confused).contains("algorithm"), "{confused:?}");
}
