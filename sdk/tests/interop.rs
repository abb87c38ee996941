//! Interoperability with independent implementations: the Python `standardwebhooks`
//! package (Standard Webhooks) and `PyJWT` (link tokens), in both directions.
//!
//! The Python interpreter comes from `tests/py/ensure-venv.sh`, which creates the venv once.
//! There is no skipping: without Python or the packages this test fails.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use diax_sdk::clock::unix_now;
use diax_sdk::token::{LINK_TOKEN_TYP, LinkTokenIssuer, LinkTokenValidator, TokenError};
use diax_sdk::webhook::{RawHeaders, sign};
use diax_sdk::{AccountId, KeyId, Keyring, MessageId, ProviderId, Secret};
use serde_json::{Value, json};

const CASES: usize = 50;

/// Verifies, signs and decodes what the Rust side asks for; JSON in on stdin, JSON out.
const SCRIPT: &str = r#"
import base64, json, sys, warnings
from datetime import datetime, timezone
import jwt
import standardwebhooks
from standardwebhooks import Webhook

warnings.simplefilter("ignore")  # PyJWT warns about HMAC keys under 32 bytes
req = json.load(sys.stdin)

def key_bytes(secret):
    return base64.b64decode(secret[len("whsec_"):])

def attempt(f):
    try:
        return {"ok": True, "value": f()}
    except Exception as e:
        return {"ok": False, "error": type(e).__name__ + ": " + str(e)}

out = {"versions": {"standardwebhooks": getattr(standardwebhooks, "__version__", "?"),
                    "jwt": jwt.__version__}}
out["verify"] = [
    attempt(lambda c=c: Webhook(c["secret"]).verify(
        c["body"].encode("utf-8"),
        {"webhook-id": c["id"], "webhook-timestamp": str(c["timestamp"]),
         "webhook-signature": c["signature"]},
        json_parse=False))
    for c in req["verify"]
]
out["sign"] = [
    Webhook(c["secret"]).sign(
        c["id"], datetime.fromtimestamp(c["timestamp"], tz=timezone.utc), c["body"])
    for c in req["sign"]
]
out["decode"] = [
    attempt(lambda c=c: {
        "claims": jwt.decode(c["token"], key=key_bytes(c["secret"]), algorithms=["HS256"],
                             audience=c["aud"], issuer=c["iss"],
                             options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}),
        "header": jwt.get_unverified_header(c["token"]),
    })
    for c in req["decode"]
]
out["encode"] = [
    jwt.encode(c["claims"], key_bytes(c["secret"]), algorithm=c.get("alg", "HS256"),
               headers=c["headers"])
    for c in req["encode"]
]
json.dump(out, sys.stdout)
"#;

fn python() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/ensure-venv.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/py/ensure-venv.sh");
    assert!(
        out.status.success(),
        "ensure-venv.sh failed: the Python venv with standardwebhooks and PyJWT is required"
    );
    let path = String::from_utf8(out.stdout).expect("utf-8 path");
    path.trim().to_owned()
}

fn run_python(request: &Value) -> Value {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("send request to python");
    let out = child.wait_with_output().expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python answers JSON")
}

fn below(n: u32) -> u32 {
    rand::random::<u32>() % n
}

/// A random UTF-8 body: JSON-ish text with multi-byte characters and control characters.
/// (`standardwebhooks` decodes the body as UTF-8, so it cannot take arbitrary bytes; the
/// SDK's byte-level handling is covered by the property tests.)
fn random_body() -> String {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "\"",
        ":",
        ",",
        " ",
        "\n",
        "\t",
        "\r",
        "\0",
        "\\",
        "é",
        "ß",
        "中",
        "😀",
        "\u{7f}",
        "\u{2028}",
        "a",
        "Z",
        "0",
        "9",
        ".",
        "\"type\":\"job.offer\"",
        "null",
        "[1,2]",
    ];
    let len = match below(10) {
        0 => 0,
        1 => 2000 + below(3000),
        _ => below(200),
    };
    (0..len)
        .map(|_| {
            if below(3) == 0 {
                PIECES[below(PIECES.len() as u32) as usize].to_owned()
            } else {
                char::from_u32(0x20 + below(0x5f)).map_or_else(String::new, String::from)
            }
        })
        .collect()
}

fn random_secret() -> Secret {
    let mut bytes = vec![0u8; 16 + below(49) as usize];
    rand::fill(&mut bytes[..]);
    Secret::from_bytes(&bytes).expect("16..=64 bytes")
}

fn random_id() -> MessageId {
    match below(3) {
        0 => MessageId::generate(),
        1 => MessageId::parse(format!("msg_{}-{}.{}", below(1000), below(1000), below(9)))
            .expect("id"),
        _ => MessageId::parse(diax_sdk::util::random_token(
            "evt:",
            1 + below(100) as usize,
        ))
        .expect("id"),
    }
}

fn near_now() -> i64 {
    unix_now() + i64::from(below(400)) - 200
}

#[test]
fn standard_webhooks_both_directions() {
    struct Case {
        secret: Secret,
        id: MessageId,
        timestamp: i64,
        body: String,
    }
    let cases: Vec<Case> = (0..CASES)
        .map(|_| Case {
            secret: random_secret(),
            id: random_id(),
            timestamp: near_now(),
            body: random_body(),
        })
        .collect();

    // SDK signs -> Python verifies. Every fifth case signs with a rotation keyring (two keys)
    // of which Python knows only one; every seventh is tampered with and must be refused.
    let mut verify = Vec::new();
    let mut expect_ok = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut ring = Keyring::single(KeyId::parse("key_a").expect("id"), c.secret.clone());
        if i % 5 == 0 {
            ring.insert(KeyId::parse("key_b").expect("id"), random_secret(), None);
        }
        let signed = ring
            .sign(&c.id, c.timestamp, c.body.as_bytes())
            .expect("sign");
        let tampered = i % 7 == 3;
        let body = if tampered {
            format!("{} ", c.body)
        } else {
            c.body.clone()
        };
        verify.push(json!({
            "secret": c.secret.expose(),
            "id": signed.id.as_str(),
            "timestamp": signed.timestamp,
            "signature": signed.signature,
            "body": body,
        }));
        expect_ok.push(!tampered);
    }

    // Python signs -> SDK verifies.
    let sign_req: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"secret": c.secret.expose(), "id": c.id.as_str(),
                   "timestamp": c.timestamp, "body": c.body})
        })
        .collect();

    let answer = run_python(&json!({
        "verify": verify, "sign": sign_req, "decode": [], "encode": [],
    }));
    eprintln!("python packages: {}", answer["versions"]);

    let verdicts = answer["verify"].as_array().expect("verify answers");
    assert_eq!(verdicts.len(), CASES);
    for (i, (v, ok)) in verdicts.iter().zip(&expect_ok).enumerate() {
        assert_eq!(
            v["ok"].as_bool(),
            Some(*ok),
            "case {i}: python said {v} for body {:?}",
            cases[i].body
        );
    }

    let sigs = answer["sign"].as_array().expect("sign answers");
    assert_eq!(sigs.len(), CASES);
    let now = unix_now();
    for (c, sig) in cases.iter().zip(sigs) {
        let sig = sig.as_str().expect("signature string");
        // Same bytes as our own signer...
        assert_eq!(
            sig,
            sign(&c.secret, c.id.as_str(), c.timestamp, c.body.as_bytes())
        );
        // ...and accepted by our verifier, refused over another body.
        let ring = Keyring::single(KeyId::parse("key_a").expect("id"), c.secret.clone());
        let ts = c.timestamp.to_string();
        let h = RawHeaders::new(c.id.as_str(), &ts, sig);
        let verified = ring
            .verify_at(&h, c.body.as_bytes(), now, 300)
            .expect("python's signature verifies");
        assert_eq!(verified.id, c.id);
        assert!(ring.verify_at(&h, b"x", now, 300).is_err());
    }
}

#[test]
fn link_tokens_both_directions_with_pyjwt() {
    struct Case {
        secret: Secret,
        kid: KeyId,
        iss: ProviderId,
        aud: String,
        sub: AccountId,
        ttl: u64,
    }
    let cases: Vec<Case> = (0..CASES)
        .map(|_| Case {
            secret: random_secret(),
            kid: KeyId::generate(),
            iss: ProviderId::generate(),
            aud: format!("diax-{}", below(1000)),
            sub: AccountId::generate(),
            ttl: 60 + u64::from(below(3600)),
        })
        .collect();
    let now = unix_now();

    // SDK issues -> PyJWT decodes (and refuses a wrong audience).
    let mut issued = Vec::new();
    let mut decode = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let t = LinkTokenIssuer::new(
            c.iss.clone(),
            c.aud.clone(),
            c.kid.clone(),
            c.secret.clone(),
        )
        .with_ttl(c.ttl)
        .issue_at(&c.sub, now)
        .expect("issue");
        let aud = if i % 9 == 4 {
            "someone-else".to_owned()
        } else {
            c.aud.clone()
        };
        decode.push(json!({"token": t.token, "secret": c.secret.expose(),
                           "aud": aud, "iss": c.iss.as_str()}));
        issued.push(t);
    }

    // PyJWT encodes -> SDK validates. Some with an audience list; a few that must be
    // refused: typ JWT, HS384, signed with another key.
    let encode: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let aud = if i % 4 == 1 {
                json!(["other-broker", c.aud])
            } else {
                json!(c.aud)
            };
            let mut typ = LINK_TOKEN_TYP;
            let mut alg = "HS256";
            let mut secret = c.secret.expose();
            match i % 10 {
                7 => typ = "JWT",
                8 => alg = "HS384",
                9 => secret = random_secret().expose(),
                _ => {}
            }
            json!({
                "claims": {"iss": c.iss.as_str(), "sub": c.sub.as_str(), "aud": aud,
                           "iat": now, "exp": now + c.ttl as i64, "jti": format!("jti-{i}")},
                "headers": {"kid": c.kid.as_str(), "typ": typ},
                "alg": alg,
                "secret": secret,
            })
        })
        .collect();

    let answer = run_python(&json!({
        "verify": [], "sign": [], "decode": decode, "encode": encode,
    }));

    let decoded = answer["decode"].as_array().expect("decode answers");
    assert_eq!(decoded.len(), CASES);
    for (i, ((d, t), c)) in decoded.iter().zip(&issued).zip(&cases).enumerate() {
        if i % 9 == 4 {
            assert_eq!(d["ok"], false, "wrong audience accepted: {d}");
            assert!(
                d["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("InvalidAudience")),
                "{d}"
            );
            continue;
        }
        assert_eq!(d["ok"], true, "case {i}: PyJWT refused our token: {d}");
        let claims = &d["value"]["claims"];
        assert_eq!(claims["iss"], c.iss.as_str());
        assert_eq!(claims["sub"], c.sub.as_str());
        assert_eq!(claims["aud"], c.aud);
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + c.ttl as i64);
        assert_eq!(claims["jti"], t.claims.jti);
        let header = &d["value"]["header"];
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], LINK_TOKEN_TYP);
        assert_eq!(header["kid"], c.kid.as_str());
    }

    let encoded = answer["encode"].as_array().expect("encode answers");
    assert_eq!(encoded.len(), CASES);
    for (i, (token, c)) in encoded.iter().zip(&cases).enumerate() {
        let token = token.as_str().expect("token");
        let ring = Keyring::single(c.kid.clone(), c.secret.clone());
        let got =
            LinkTokenValidator::new(c.iss.clone(), c.aud.clone()).validate_at(token, &ring, now);
        match i % 10 {
            7 => assert_eq!(got, Err(TokenError::WrongType)),
            8 => assert!(
                matches!(got, Err(TokenError::UnsupportedAlgorithm(ref a)) if a == "HS384"),
                "{got:?}"
            ),
            9 => assert_eq!(got, Err(TokenError::BadSignature)),
            _ => {
                let claims =
                    got.unwrap_or_else(|e| panic!("case {i}: SDK refused PyJWT's token: {e}"));
                assert_eq!(claims.iss, c.iss);
                assert_eq!(claims.sub, c.sub);
                assert_eq!(claims.aud, c.aud);
                assert_eq!(claims.iat, now);
                assert_eq!(claims.exp, now + c.ttl as i64);
                assert_eq!(claims.jti, format!("jti-{i}"));
            }
        }
    }
}

#[test]
fn published_vector_in_python_too() {
    let answer = run_python(&json!({
        "verify": [], "decode": [], "encode": [],
        "sign": [{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                  "id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "timestamp": 1614265330,
                  "body": "{\"test\": 2432232314}"}],
    }));
    assert_eq!(
        answer["sign"][0],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    // And the secret decodes to the same key bytes on both sides.
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    assert_eq!(
        STANDARD.encode(secret.expose_bytes()),
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
}
