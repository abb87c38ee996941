//! Interoperability of `v1a` (ed25519) signatures, `whsk_`/`whpk_` keys and EdDSA link tokens
//! with independent implementations: Python's `cryptography` (OpenSSL's Ed25519) and `PyJWT`,
//! in both directions, over random cases with negative ones.
//!
//! The Python interpreter comes from `tests/py/ensure-venv.sh`, which creates the venv once.
//! There is no skipping: without Python or the packages this test fails.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use diax_sdk::token::{LINK_TOKEN_TYP, LinkTokenIssuer, LinkTokenValidator, TokenError};
use diax_sdk::webhook::{RawHeaders, sign_v1a};
use diax_sdk::{
    AccountId, KeyId, Keyring, MessageId, ProviderId, PublicKey, Secret, SigningKey, VerifyError,
};
use serde_json::{Value, json};

const CASES: usize = 60;

/// Python's side: an independent reading of the header, the keys and the tokens.
const SCRIPT: &str = r#"
import base64, json, sys, warnings
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, PrivateFormat, NoEncryption
from cryptography.exceptions import InvalidSignature

warnings.simplefilter("ignore")
req = json.load(sys.stdin)

def b64(b): return base64.b64encode(b).decode()
def private(whsk):
    raw = base64.b64decode(whsk[len("whsk_"):], validate=True)
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64:
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert raw[32:] == pub, "public half does not match the seed"
    return key
def public(whpk):
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk[len("whpk_"):], validate=True))
def pub_text(key):
    return "whpk_" + b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

def verify(c):
    content = (c["id"] + "." + str(c["timestamp"]) + ".").encode() + base64.b64decode(c["body"])
    key = public(c["public"])
    for entry in c["signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), content)
            return True
        except (InvalidSignature, ValueError):
            pass
    return False

def sign(c):
    content = (c["id"] + "." + str(c["timestamp"]) + ".").encode() + base64.b64decode(c["body"])
    return "v1a," + b64(private(c["secret"]).sign(content))

def generate(_):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"seed_form": "whsk_" + b64(seed), "pair_form": "whsk_" + b64(seed + pub),
            "public": "whpk_" + b64(pub)}

def attempt(f):
    try:
        return {"ok": True, "value": f()}
    except Exception as e:
        return {"ok": False, "error": type(e).__name__ + ": " + str(e)}

def decode(c):
    claims = jwt.decode(c["token"], key=public(c["public"]), algorithms=["EdDSA"],
                        audience=c["aud"], issuer=c["iss"],
                        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})
    return {"claims": claims, "header": jwt.get_unverified_header(c["token"])}

def encode(c):
    if c["alg"] == "EdDSA":
        key = private(c["secret"])
    else:  # an HMAC token keyed with the public key's raw bytes: the confusion attack
        key = public(c["public"]).public_bytes(Encoding.Raw, PublicFormat.Raw)
    return jwt.encode(c["claims"], key, algorithm=c["alg"], headers=c["headers"])

out = {"versions": {"jwt": jwt.__version__}}
out["verify"] = [verify(c) for c in req.get("verify", [])]
out["sign"] = [sign(c) for c in req.get("sign", [])]
out["public_of"] = [pub_text(private(s)) for s in req.get("public_of", [])]
out["generate"] = [generate(i) for i in range(req.get("generate", 0))]
out["decode"] = [attempt(lambda c=c: decode(c)) for c in req.get("decode", [])]
out["encode"] = [encode(c) for c in req.get("encode", [])]
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
        "ensure-venv.sh failed: the Python venv with cryptography and PyJWT is required"
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned()
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

/// Arbitrary bytes (not only UTF-8): `cryptography` signs bytes, so nothing limits the body.
fn random_body() -> Vec<u8> {
    let len = match below(10) {
        0 => 0,
        1 => 2000 + below(3000),
        _ => below(300),
    };
    let mut body = vec![0u8; len as usize];
    rand::fill(&mut body[..]);
    body
}

fn random_id() -> MessageId {
    if below(2) == 0 {
        MessageId::generate()
    } else {
        MessageId::parse(diax_sdk::util::random_token(
            "evt:",
            1 + below(100) as usize,
        ))
        .expect("id")
    }
}

const NOW: i64 = 1_764_352_800;

#[test]
fn v1a_signatures_and_keys_both_directions() {
    struct Case {
        key: SigningKey,
        id: MessageId,
        timestamp: i64,
        body: Vec<u8>,
    }
    let cases: Vec<Case> = (0..CASES)
        .map(|_| Case {
            key: SigningKey::generate(),
            id: random_id(),
            timestamp: NOW + i64::from(below(400)) - 200,
            body: random_body(),
        })
        .collect();

    // SDK signs -> Python verifies. Every fifth case signs with a migration ring (an HMAC
    // secret and the key), every seventh is tampered with, every eleventh is checked with
    // another key's public key: those two kinds must be refused.
    let mut verify = Vec::new();
    let mut expect = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut ring = Keyring::single(KeyId::parse("key_ed").expect("id"), c.key.clone());
        if i % 5 == 0 {
            ring.insert(
                KeyId::parse("key_hmac").expect("id"),
                Secret::generate(),
                None,
            );
        }
        let signed = ring.sign(&c.id, c.timestamp, &c.body).expect("sign");
        let mut body = c.body.clone();
        let mut public = c.key.public_key();
        if i % 7 == 3 {
            body.push(b' ');
        }
        if i % 11 == 6 {
            public = SigningKey::generate().public_key();
        }
        verify.push(json!({
            "public": public.to_string(), "id": c.id.as_str(), "timestamp": c.timestamp,
            "signature": signed.signature, "body": STANDARD.encode(&body),
        }));
        expect.push(i % 7 != 3 && i % 11 != 6);
    }

    // Python signs -> SDK verifies; Python derives the public key of our whsk_ text.
    let sign: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"secret": c.key.expose(), "id": c.id.as_str(), "timestamp": c.timestamp,
                   "body": STANDARD.encode(&c.body)})
        })
        .collect();
    let public_of: Vec<String> = cases.iter().map(|c| c.key.expose()).collect();

    let answer = run_python(&json!({
        "verify": verify, "sign": sign, "public_of": public_of, "generate": 10,
    }));
    eprintln!("python packages: {}", answer["versions"]);

    let verdicts = answer["verify"].as_array().expect("verify answers");
    assert_eq!(verdicts.len(), CASES);
    for (i, (v, ok)) in verdicts.iter().zip(&expect).enumerate() {
        assert_eq!(v.as_bool(), Some(*ok), "case {i}: python said {v}");
    }

    let sigs = answer["sign"].as_array().expect("sign answers");
    for (i, (c, sig)) in cases.iter().zip(sigs).enumerate() {
        let sig = sig.as_str().expect("signature");
        // Ed25519 is deterministic: the same bytes as our signer.
        assert_eq!(sig, sign_v1a(&c.key, c.id.as_str(), c.timestamp, &c.body));
        let ring = Keyring::single(KeyId::parse("key_ed").expect("id"), c.key.public_key());
        let ts = c.timestamp.to_string();
        let h = RawHeaders::new(c.id.as_str(), &ts, sig);
        assert_eq!(
            ring.verify_at(&h, &c.body, NOW, 300).expect("verifies").id,
            c.id
        );
        // Negative cases on our side: another body, another key, a cut signature, the HMAC
        // scheme only.
        let mut other = c.body.clone();
        other.push(i as u8);
        assert_eq!(
            ring.verify_at(&h, &other, NOW, 300),
            Err(VerifyError::SignatureMismatch)
        );
        let stranger = Keyring::single(
            KeyId::parse("key_ed").expect("id"),
            SigningKey::generate().public_key(),
        );
        assert_eq!(
            stranger.verify_at(&h, &c.body, NOW, 300),
            Err(VerifyError::SignatureMismatch)
        );
        let cut = &sig[..sig.len() - 4];
        let h_cut = RawHeaders::new(c.id.as_str(), &ts, cut);
        assert!(matches!(
            ring.verify_at(&h_cut, &c.body, NOW, 300),
            Err(VerifyError::MalformedHeader { .. })
        ));
        let hmac_only = Keyring::single(KeyId::parse("key_h").expect("id"), Secret::generate());
        assert!(matches!(
            hmac_only.verify_at(&h, &c.body, NOW, 300),
            Err(VerifyError::WrongScheme { found: "v1a", .. })
        ));
    }

    let publics = answer["public_of"].as_array().expect("public_of answers");
    for (c, p) in cases.iter().zip(publics) {
        assert_eq!(p.as_str(), Some(c.key.public_key().to_string().as_str()));
    }

    // Keys Python generated parse in both secret forms and sign for Python's public key.
    for g in answer["generate"].as_array().expect("generated keys") {
        let public = PublicKey::parse(g["public"].as_str().expect("whpk")).expect("whpk parses");
        for form in ["seed_form", "pair_form"] {
            let key = SigningKey::parse(g[form].as_str().expect("whsk")).expect("whsk parses");
            assert_eq!(key.public_key(), public, "{form}");
        }
    }
}

#[test]
fn eddsa_link_tokens_both_directions_with_pyjwt() {
    struct Case {
        key: SigningKey,
        kid: KeyId,
        iss: ProviderId,
        aud: String,
        sub: AccountId,
        ttl: u64,
    }
    let cases: Vec<Case> = (0..CASES)
        .map(|_| Case {
            key: SigningKey::generate(),
            kid: KeyId::generate(),
            iss: ProviderId::generate(),
            aud: format!("diax-{}", below(1000)),
            sub: AccountId::generate(),
            ttl: 60 + u64::from(below(3600)),
        })
        .collect();
    let now = diax_sdk::clock::unix_now();

    // SDK issues -> PyJWT decodes with the public key; a wrong audience and a wrong public key
    // must be refused.
    let mut issued = Vec::new();
    let mut decode = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let t = LinkTokenIssuer::new(c.iss.clone(), c.aud.clone(), c.kid.clone(), c.key.clone())
            .with_ttl(c.ttl)
            .issue_at(&c.sub, now)
            .expect("issue");
        let aud = if i % 9 == 4 {
            "someone-else".to_owned()
        } else {
            c.aud.clone()
        };
        let public = if i % 8 == 5 {
            SigningKey::generate().public_key()
        } else {
            c.key.public_key()
        };
        decode.push(json!({"token": t.token, "public": public.to_string(),
                           "aud": aud, "iss": c.iss.as_str()}));
        issued.push(t);
    }

    // PyJWT encodes -> SDK validates with the public key. Refused: typ JWT, signed by another
    // key, and HS256 keyed with the public key's bytes under the public key's kid.
    let encode: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut typ = LINK_TOKEN_TYP;
            let mut alg = "EdDSA";
            let mut secret = c.key.expose();
            match i % 10 {
                7 => typ = "JWT",
                8 => alg = "HS256",
                9 => secret = SigningKey::generate().expose(),
                _ => {}
            }
            json!({
                "claims": {"iss": c.iss.as_str(), "sub": c.sub.as_str(), "aud": c.aud,
                           "iat": now, "exp": now + c.ttl as i64, "jti": format!("jti-{i}")},
                "headers": {"kid": c.kid.as_str(), "typ": typ},
                "alg": alg, "secret": secret, "public": c.key.public_key().to_string(),
            })
        })
        .collect();

    let answer = run_python(&json!({"decode": decode, "encode": encode}));

    let decoded = answer["decode"].as_array().expect("decode answers");
    assert_eq!(decoded.len(), CASES);
    for (i, ((d, t), c)) in decoded.iter().zip(&issued).zip(&cases).enumerate() {
        if i % 9 == 4 || i % 8 == 5 {
            assert_eq!(d["ok"], false, "case {i}: PyJWT accepted a bad token: {d}");
            continue;
        }
        assert_eq!(d["ok"], true, "case {i}: PyJWT refused our token: {d}");
        let claims = &d["value"]["claims"];
        assert_eq!(claims["sub"], c.sub.as_str());
        assert_eq!(claims["exp"], now + c.ttl as i64);
        assert_eq!(claims["jti"], t.claims.jti);
        let header = &d["value"]["header"];
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], LINK_TOKEN_TYP);
        assert_eq!(header["kid"], c.kid.as_str());
    }

    let encoded = answer["encode"].as_array().expect("encode answers");
    for (i, (token, c)) in encoded.iter().zip(&cases).enumerate() {
        let token = token.as_str().expect("token");
        let ring = Keyring::single(c.kid.clone(), c.key.public_key());
        let got =
            LinkTokenValidator::new(c.iss.clone(), c.aud.clone()).validate_at(token, &ring, now);
        match i % 10 {
            7 => assert_eq!(got, Err(TokenError::WrongType)),
            8 => assert_eq!(got, Err(TokenError::UnsupportedAlgorithm("HS256".into()))),
            9 => assert_eq!(got, Err(TokenError::BadSignature)),
            _ => {
                let claims =
                    got.unwrap_or_else(|e| panic!("case {i}: SDK refused PyJWT's token: {e}"));
                assert_eq!(claims.sub, c.sub);
                assert_eq!(claims.exp, now + c.ttl as i64);
                assert_eq!(claims.jti, format!("jti-{i}"));
            }
        }
    }
}
