//! Judge repaired outputs with an independent implementation: Python `trimesh`
//! (`is_watertight`, `is_winding_consistent`, `volume`, and the sign of every body's volume).
//! Python and trimesh come from `tests/py/ensure-venv.sh`; if they are missing this test FAILS.

use std::path::PathBuf;
use std::process::Command;

use fixmyprint_heal::{self as heal, RepairOptions, generate};

pub(crate) fn python() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/ensure-venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "ensure-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert!(p.exists(), "python not found at {}", p.display());
    p
}

/// Repairs every case with the default options, has trimesh judge the outputs, and checks what
/// holds for every case: watertight, consistently wound, volume within 0.5 % of the clean
/// model's, one body per clean shell. Returns each case's name with trimesh's verdict.
fn repair_and_judge(cases: &[(String, generate::Generated)]) -> Vec<(&str, serde_json::Value)> {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, (name, g)) in cases.iter().enumerate() {
        let r = heal::repair(&g.stl, &RepairOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = dir.path().join(format!("case{i}.stl"));
        std::fs::write(&p, r.to_stl_bytes()).unwrap();
        paths.push(p);
    }
    let out = Command::new(python())
        .arg("-c")
        .arg(JUDGE)
        .args(&paths)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "trimesh judge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("judge JSON");
    assert_eq!(verdicts.len(), cases.len());
    for ((name, g), v) in cases.iter().zip(&verdicts) {
        assert_eq!(v["watertight"], true, "{name}: trimesh says not watertight");
        assert_eq!(
            v["winding"], true,
            "{name}: trimesh says winding inconsistent"
        );
        let vol = v["volume"].as_f64().unwrap();
        let rel = (vol - g.clean.volume).abs() / g.clean.volume;
        assert!(
            rel < 0.005,
            "{name}: trimesh volume {vol} vs clean {}",
            g.clean.volume
        );
        let bodies = v["bodies"].as_array().unwrap();
        assert_eq!(bodies.len(), g.clean.shells.len(), "{name}: bodies");
    }
    cases
        .iter()
        .map(|(name, _)| name.as_str())
        .zip(verdicts)
        .collect()
}

const JUDGE: &str = r#"
import json, sys
import numpy as np
import trimesh
out = []
for path in sys.argv[1:]:
    m = trimesh.load(path, force="mesh")
    bodies = m.split(only_watertight=False)
    info = []
    for b in bodies:
        info.append({"volume": float(b.volume), "min": b.bounds[0].tolist(), "max": b.bounds[1].tolist()})
    out.append({
        "watertight": bool(m.is_watertight),
        "winding": bool(m.is_winding_consistent),
        "volume": float(m.volume),
        "faces": int(len(m.faces)),
        "bodies": info,
    })
print(json.dumps(out))
"#;

#[test]
fn heal_trimesh_agrees_on_every_defect_and_all_together() {
    let mut cases: Vec<(String, generate::Generated)> = generate::Defects::each()
        .into_iter()
        .map(|(name, d)| (name.to_string(), generate::model(21, 15_000, &d)))
        .collect();
    cases.push((
        "all".into(),
        generate::model(22, 60_000, &generate::Defects::all()),
    ));
    cases.push((
        "all ascii".into(),
        generate::model(
            23,
            15_000,
            &generate::Defects {
                ascii: true,
                ..generate::Defects::all()
            },
        ),
    ));
    // Float noise from none to 1e-5 of the diagonal per coordinate, healed with the defaults.
    for amp in [1e-6, 1e-5] {
        cases.push((
            format!("all, noise {amp}"),
            generate::model(
                24,
                30_000,
                &generate::Defects {
                    noise_amplitude: amp,
                    ..generate::Defects::all()
                },
            ),
        ));
    }
    for (name, v) in repair_and_judge(&cases) {
        let bodies = v["bodies"].as_array().unwrap();
        // Outward per body: a body nested (by bounds) in an odd number of others must have a
        // negative volume (a cavity), every other body a positive one.
        let b: Vec<(f64, Vec<f64>, Vec<f64>)> = bodies
            .iter()
            .map(|x| {
                let f = |k: &str| {
                    x[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_f64().unwrap())
                        .collect::<Vec<_>>()
                };
                (x["volume"].as_f64().unwrap(), f("min"), f("max"))
            })
            .collect();
        let mut cavities = 0;
        for (i, s) in b.iter().enumerate() {
            let depth = b
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && (0..3).all(|a| o.1[a] < s.1[a] && o.2[a] > s.2[a]))
                .count();
            if depth % 2 == 1 {
                cavities += 1;
                assert!(s.0 < 0.0, "{name}: cavity body faces outward ({})", s.0);
            } else {
                assert!(s.0 > 0.0, "{name}: body faces inward ({})", s.0);
            }
        }
        assert_eq!(
            cavities, 1,
            "{name}: the nested cavity must survive as a cavity"
        );
    }
}

#[test]
fn heal_trimesh_agrees_on_cad_and_curved_soups() {
    let mut cases = crate::shapes::cases(1e-5, 51);
    cases.extend(crate::shapes::cases(0.0, 52));
    for (name, v) in repair_and_judge(&cases) {
        let bodies = v["bodies"].as_array().unwrap();
        for b in bodies {
            assert!(
                b["volume"].as_f64().unwrap() > 0.0,
                "{name}: a body faces inward"
            );
        }
    }
}

#[test]
fn heal_trimesh_agrees_on_a_stitched_seam() {
    // An open patch cut out of a tiled cube, its rim moved by up to 2e-4 and 5e-4 of the
    // diagonal (beyond the weld's bound): stitched back, judged as one closed body with the
    // cube's facet count.
    let cases: Vec<(String, generate::Generated)> = [2e-4, 5e-4]
        .into_iter()
        .map(|gap| {
            (
                format!("seam gap {gap}"),
                generate::seam_patch(100, 2, gap, 8),
            )
        })
        .collect();
    for ((name, g), (_, v)) in cases.iter().zip(repair_and_judge(&cases)) {
        assert_eq!(
            v["faces"].as_u64().unwrap(),
            g.clean.mesh.triangles.len() as u64,
            "{name}: facets"
        );
        assert!(v["volume"].as_f64().unwrap() > 0.0, "{name}: faces inward");
    }
}

#[test]
fn heal_trimesh_agrees_on_fans_finer_than_the_noise() {
    // The small sphere's pole fans, whose rim edges are shorter than the copies' spread.
    let cases: Vec<(String, generate::Generated)> = crate::fans::cases()
        .into_iter()
        .map(|(name, g, _)| (name, g))
        .collect();
    for (name, v) in repair_and_judge(&cases) {
        let cavities = v["bodies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["volume"].as_f64().unwrap() < 0.0)
            .count();
        assert_eq!(cavities, 1, "{name}: the cavity, and only it, faces inward");
    }
}
