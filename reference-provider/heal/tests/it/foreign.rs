//! Models this project did not make, broken by code it did not write:
//! `tests/py/foreign_models.py` builds them with trimesh's `creation` module (spheres with pole
//! fans, a capsule, a cone, a disc and a tube whose caps are fans and strips of long thin
//! facets, a torus, a CAD block, an assembly with a cavity, a sphere far from the origin, a
//! capsule in metres), parts a small clearance apart (two blocks, three stacked plates; with
//! cracks along their edges a stitch could sew one part to the next, and with a stray facet
//! far away a weld whose bound grew with the bounding box merged them), solids whose faces
//! were meshed apart with different subdivisions (a block and an L-shaped bracket whose
//! every seam is a row of T-junctions, as CAD exporters write them), and bodies that touch
//! along a face meshed differently on each side (two blocks, two stacked cylinders), and
//! breaks them its own way (per-facet copies with noise from 0 to 1e-5 of the diagonal,
//! flips, holes, duplicates, repeated-corner and collinear slivers, debris, T-junctions with
//! and without their zero-area facet, vertices written twice two units in the last place
//! apart with slivers between the copies, ASCII files and binary files whose header starts with
//! `solid`). Every file is repaired with the default options, and trimesh
//! judges the result against the clean model: watertight, consistently wound, volume within
//! 0.5 %, as many bodies (and inward cavities) as the clean model, and no facet flat up to
//! rounding.

use std::process::Command;

use fixmyprint_heal::{self as heal, RepairOptions};

#[test]
fn models_from_another_generator_heal_with_the_defaults() {
    let python = crate::trimesh::python();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/foreign_models.py");
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let outputs = dir.path().join("out");
    std::fs::create_dir_all(&outputs).unwrap();
    let made = Command::new(&python)
        .arg(&script)
        .arg("make")
        .arg(&inputs)
        .output()
        .expect("run python");
    assert!(
        made.status.success(),
        "foreign_models.py make failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let manifest_path = inputs.join("manifest.json");
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert!(manifest.len() >= 103, "{} cases", manifest.len());
    for case in &manifest {
        let name = case["case"].as_str().unwrap();
        let bytes = std::fs::read(case["file"].as_str().unwrap()).unwrap();
        let repaired = heal::repair(&bytes, &RepairOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(outputs.join(format!("{name}.stl")), repaired.to_stl_bytes()).unwrap();
    }
    let judged = Command::new(&python)
        .arg(&script)
        .arg("judge")
        .arg(&manifest_path)
        .arg(&outputs)
        .output()
        .expect("run python");
    assert!(
        judged.status.success(),
        "foreign_models.py judge failed: {}",
        String::from_utf8_lossy(&judged.stderr)
    );
    let verdicts: Vec<serde_json::Value> = String::from_utf8(judged.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), manifest.len());
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| {
            let volume = v["volume"].as_f64().unwrap();
            let clean = v["clean_volume"].as_f64().unwrap();
            !(v["watertight"] == true
                && v["winding"] == true
                && ((volume - clean) / clean).abs() < 0.005
                && v["bodies"] == v["clean_bodies"]
                && v["negative_bodies"] == v["clean_negative_bodies"]
                && v["flat_facets"] == 0)
        })
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} repairs fail trimesh's judgement:\n{}",
        failed.len(),
        verdicts.len(),
        failed.join("\n")
    );
}
