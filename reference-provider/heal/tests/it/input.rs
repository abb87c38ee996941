//! Input validation: every broken input gets a specific error naming where, never a panic and
//! never an allocation the file size does not justify.
use fixmyprint_heal::{self as heal, HealError, RepairOptions, generate};

fn opts() -> RepairOptions {
    RepairOptions::default()
}

fn binary(facets: &[[[f32; 3]; 3]], declared: u32) -> Vec<u8> {
    let mut b = vec![0u8; 84];
    b[80..84].copy_from_slice(&declared.to_le_bytes());
    for f in facets {
        b.extend_from_slice(&[0u8; 12]);
        for p in f {
            for x in p {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        b.extend_from_slice(&[0, 0]);
    }
    b
}

fn tri(i: f32) -> [[f32; 3]; 3] {
    [[i, 0.0, 0.0], [i + 1.0, 0.0, 0.0], [i, 1.0, 0.0]]
}

fn err(bytes: &[u8]) -> HealError {
    match heal::repair(bytes, &opts()) {
        Ok(r) => panic!("expected an error, got {:?}", r.report),
        Err(e) => e,
    }
}

#[test]
fn heal_empty_file() {
    assert!(matches!(err(b""), HealError::Empty));
}

#[test]
fn heal_header_only_zero_facets() {
    let e = err(&binary(&[], 0));
    assert!(matches!(e, HealError::NoFacets), "{e}");
}

#[test]
fn heal_shorter_than_header() {
    let e = err(&[7u8; 50]);
    assert!(matches!(e, HealError::TruncatedHeader { len: 50 }), "{e}");
}

#[test]
fn heal_truncated_binary_names_facet_and_offset() {
    let facets: Vec<_> = (0..5).map(|i| tri(i as f32)).collect();
    let mut b = binary(&facets, 5);
    b.truncate(b.len() - 20);
    let e = err(&b);
    assert!(
        matches!(
            e,
            HealError::Truncated {
                declared: 5,
                facet: 4,
                offset: 284,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("byte offset 284"), "{e}");
}

#[test]
fn heal_count_larger_than_data() {
    let facets: Vec<_> = (0..5).map(|i| tri(i as f32)).collect();
    let e = err(&binary(&facets, 10));
    assert!(
        matches!(
            e,
            HealError::Truncated {
                declared: 10,
                facet: 5,
                offset: 334,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn heal_count_smaller_than_data() {
    // Data that is not a whole number of records past the count: refused, naming the bytes.
    let facets: Vec<_> = (0..10).map(|i| tri(i as f32)).collect();
    let mut b = binary(&facets, 5);
    b.extend_from_slice(&[0; 7]);
    let e = err(&b);
    assert!(
        matches!(
            e,
            HealError::TrailingData {
                declared: 5,
                extra: 257,
                offset: 334,
                ..
            }
        ),
        "{e:?}"
    );
}

/// Exporters that stream their records write the count before they know it (often 0) and
/// never go back: when the records fill the file exactly, they are read by the file's size
/// (as admesh does) and the report keeps the header's count. A count larger than the records
/// stays an error (a file cut at a record border must not pass as a smaller model).
#[test]
fn heal_binary_count_below_whole_records_reads_them_all() {
    let facets = [
        [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ];
    for declared in [0, 1, 3] {
        let b = binary(&facets, declared);
        let r = heal::repair(&b, &opts()).unwrap();
        let p = &r.report.stages.parse;
        assert_eq!((p.format.as_str(), p.facets), ("binary", 4), "{declared}");
        assert_eq!(p.header_facets, Some(u64::from(declared)));
        assert!(r.report.watertight);
        // The same through the file reader.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("count.stl");
        std::fs::write(&path, &b).unwrap();
        let soup = heal::stl::parse_file(&path, &opts()).unwrap();
        assert_eq!(
            (soup.facets(), soup.header_facets),
            (4, Some(u64::from(declared)))
        );
    }
    let exact = heal::repair(&binary(&facets, 4), &opts()).unwrap();
    assert_eq!(exact.report.stages.parse.header_facets, None);
    assert!(matches!(
        err(&binary(&facets, 5)),
        HealError::Truncated { .. }
    ));
}

/// ASCII as other writers spell it: keywords in capitals or mixed case, a UTF-8 byte-order
/// mark, `facet` with no normal, and normals a C runtime printed for NaN (`1.#QNAN`, `-nan`)
/// — normals are recomputed anyway. The vertices stay strict.
#[test]
fn heal_ascii_in_other_writers_spellings() {
    let tet = [
        ["0 0 0", "0 1 0", "1 0 0"],
        ["0 0 0", "1 0 0", "0 0 1"],
        ["0 0 0", "0 0 1", "0 1 0"],
        ["1 0 0", "0 1 0", "0 0 1"],
    ];
    let text = |facet: &str, words: [&str; 6]| {
        let [solid, outer, vertex, endloop, endfacet, endsolid] = words;
        let mut s = format!("{solid} part\r\n");
        for t in &tet {
            s += &format!("  {facet}\r\n    {outer}\r\n");
            for v in t {
                s += &format!("      {vertex} {v}\r\n");
            }
            s += &format!("    {endloop}\r\n  {endfacet}\r\n");
        }
        s + &format!("{endsolid} part\r\n")
    };
    let lower = [
        "solid",
        "outer loop",
        "vertex",
        "endloop",
        "endfacet",
        "endsolid",
    ];
    let upper = [
        "SOLID",
        "OUTER LOOP",
        "VERTEX",
        "ENDLOOP",
        "ENDFACET",
        "ENDSOLID",
    ];
    let mixed = [
        "Solid",
        "Outer Loop",
        "Vertex",
        "EndLoop",
        "EndFacet",
        "EndSolid",
    ];
    let cases = [
        text("FACET NORMAL 0 0 0", upper),
        text("Facet Normal 0 0 0", mixed),
        format!("\u{feff}{}", text("facet normal 0 0 0", lower)),
        text("facet", lower),
        text(
            "facet normal 1.#QNAN0e+000 1.#QNAN0e+000 1.#QNAN0e+000",
            lower,
        ),
        text("facet normal -1.#IND00 -nan 1.#INF", lower),
    ];
    for (i, c) in cases.iter().enumerate() {
        let r = heal::repair(c.as_bytes(), &opts()).unwrap_or_else(|e| panic!("case {i}: {e}"));
        let p = &r.report.stages.parse;
        assert_eq!((p.format.as_str(), p.facets), ("ascii", 4), "case {i}");
        assert!(r.report.watertight, "case {i}");
        assert!((r.report.volume - 1.0 / 6.0).abs() < 1e-6, "case {i}");
    }
    // A vertex is never guessed.
    let bad = text("facet normal 0 0 0", lower).replacen("vertex 1 0 0", "vertex 1.#QNAN 0 0", 1);
    assert!(matches!(err(bad.as_bytes()), HealError::Ascii { .. }));
    let bad = text("FACET NORMAL 0 0 0", upper).replacen("VERTEX 1 0 0", "VERTEX -nan 0 0", 1);
    assert!(matches!(err(bad.as_bytes()), HealError::NonFinite { .. }));
}

#[test]
fn heal_huge_declared_count_does_not_allocate() {
    // Claims 4 billion facets in a 134-byte file: must fail on the size check at once.
    let e = err(&binary(&[tri(0.0)], u32::MAX));
    assert!(matches!(e, HealError::Truncated { declared, .. } if declared == u64::from(u32::MAX)));
}

#[test]
fn heal_nan_and_infinity_name_the_facet() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut facets: Vec<_> = (0..6).map(|i| tri(i as f32)).collect();
        facets[3][1][2] = bad;
        let e = err(&binary(&facets, 6));
        assert!(
            matches!(
                e,
                HealError::NonFinite {
                    facet: 3,
                    offset: 234
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn heal_random_bytes_are_refused() {
    let mut rng = generate::Rng::new(99);
    for len in [1usize, 83, 84, 85, 133, 134, 135, 1000, 4096, 100_000] {
        let b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Either a clear error or (if the size happens to match) a repair; never a panic.
        if let Err(e) = heal::repair(&b, &opts()) {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn heal_solid_followed_by_junk() {
    let e = err(b"solid thing\n this is not a facet at all\n");
    match e {
        HealError::Ascii {
            line: 2,
            offset: 13,
            ref problem,
        } => assert!(problem.contains("`this`"), "{problem}"),
        other => panic!("{other:?}"),
    }
    let e = err(b"solid x\nfacet normal 0 0 1\n outer loop\n vertex 0 0 zero\n");
    assert!(matches!(e, HealError::Ascii { line: 4, .. }), "{e:?}");
}

#[test]
fn heal_ascii_cut_mid_facet_is_an_error() {
    let g = generate::model(
        1,
        2_000,
        &generate::Defects {
            ascii: true,
            ..generate::Defects::none()
        },
    );
    let full = &g.stl;
    assert!(heal::repair(full, &opts()).is_ok());
    for frac in [0.1, 0.37, 0.5, 0.93, 0.9999] {
        let cut = &full[..(full.len() as f64 * frac) as usize];
        let e = err(cut);
        assert!(matches!(e, HealError::Ascii { .. }), "{frac}: {e:?}");
        assert!(
            e.to_string().contains("cut off") || e.to_string().contains("expected"),
            "{e}"
        );
    }
}

#[test]
fn heal_ascii_large_is_parsed_in_parallel_and_cut_detected() {
    // Over 1 MiB, so the parser splits it into chunks.
    let g = generate::model(
        2,
        20_000,
        &generate::Defects {
            ascii: true,
            ..generate::Defects::all()
        },
    );
    assert!(g.stl.len() > 1 << 20);
    let r = heal::repair(&g.stl, &opts()).unwrap();
    assert_eq!(r.report.stages.parse.format, "ascii");
    let cut = &g.stl[..g.stl.len() / 2 + 17];
    assert!(matches!(err(cut), HealError::Ascii { .. }));
}

#[test]
fn heal_ascii_nan_is_refused() {
    let e = err(b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 nan\nvertex 0 1 0\nendloop\nendfacet\nendsolid x\n");
    assert!(
        matches!(
            e,
            HealError::NonFinite {
                facet: 0,
                offset: 8
            }
        ),
        "{e:?}"
    );
}

#[test]
fn heal_binary_header_starting_with_solid_is_binary() {
    let g = generate::model(3, 3_000, &generate::Defects::none());
    let mut b = g.stl.clone();
    b[..16].copy_from_slice(b"solid binary CAD");
    let r = heal::repair(&b, &opts()).unwrap();
    assert_eq!(r.report.stages.parse.format, "binary");
    assert!(r.report.watertight);
}

#[test]
fn heal_size_and_facet_caps() {
    let g = generate::broken_model(4, 2_000);
    let small = RepairOptions {
        max_file_bytes: 1000,
        ..opts()
    };
    let e = heal::repair(&g, &small).unwrap_err();
    assert!(
        matches!(e, HealError::TooLarge { limit: 1000, .. }),
        "{e:?}"
    );
    let few = RepairOptions {
        max_facets: 100,
        ..opts()
    };
    let e = heal::repair(&g, &few).unwrap_err();
    assert!(
        matches!(e, HealError::TooManyFacets { limit: 100, .. }),
        "{e:?}"
    );
    // The file path is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.stl");
    std::fs::write(&p, &g).unwrap();
    let e = heal::repair_file(&p, &small, &|_| {}).unwrap_err();
    assert!(matches!(e, HealError::TooLarge { .. }));
    let e = heal::repair_file(&dir.path().join("missing.stl"), &opts(), &|_| {}).unwrap_err();
    assert!(matches!(e, HealError::Io { .. }));
}

#[test]
fn heal_empty_ascii_file_is_named_as_such() {
    let e = err(b"solid x\nendsolid x\n");
    assert!(matches!(e, HealError::EmptyAscii), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("ASCII STL") && msg.contains("no facets"),
        "{msg}"
    );
    assert!(!msg.contains("binary"), "{msg}");
}

/// `n` separate triangles, far apart: each is its own shell of one facet.
fn isolated_triangles(n: usize) -> Vec<u8> {
    let facets: Vec<[[f32; 3]; 3]> = (0..n).map(|i| tri(i as f32 * 10.0)).collect();
    binary(&facets, n as u32)
}

#[test]
fn heal_isolated_triangles_are_a_typed_error_not_an_empty_mesh() {
    let e = err(&isolated_triangles(100));
    match &e {
        HealError::NothingPrintable {
            input_facets,
            tiny_shells,
            tiny_shell_facets,
            degenerate,
            repeated_vertex,
            collapsed,
            duplicates,
            shared_faces,
        } => {
            assert_eq!(
                (*input_facets, *tiny_shells, *tiny_shell_facets, *degenerate),
                (100, 100, 100, 0)
            );
            assert_eq!(
                (*repeated_vertex, *collapsed, *duplicates, *shared_faces),
                (0, 0, 0, 0)
            );
        }
        other => panic!("expected NothingPrintable, got {other:?}"),
    }
    let msg = e.to_string();
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        msg.contains("100 facets") && msg.contains("100 separate pieces"),
        "{msg}"
    );
    assert!(msg.contains("--keep-tiny-shells"), "{msg}");
    // One of each is named in the singular.
    let one = err(&isolated_triangles(1)).to_string();
    assert!(
        one.contains("of the 1 facet in the file")
            && one.contains("1 facet in 1 separate piece too small")
            && one.contains("was removed as a tiny shell ("),
        "{one}"
    );
    // The option the message names keeps them.
    let kept = heal::repair(
        &isolated_triangles(100),
        &RepairOptions {
            remove_tiny_shells: false,
            ..opts()
        },
    )
    .unwrap();
    // Each triangle's open edges make a three-edge hole, filled with its back face.
    assert_eq!(kept.mesh.triangles.len(), 200);
}

#[test]
fn heal_all_degenerate_is_a_typed_error() {
    // Three collinear corners in every facet.
    let facets: Vec<[[f32; 3]; 3]> = (0..10)
        .map(|i| {
            let x = i as f32;
            [[x, 0.0, 0.0], [x + 1.0, 1.0, 0.0], [x + 2.0, 2.0, 0.0]]
        })
        .collect();
    let e = err(&binary(&facets, 10));
    assert!(
        matches!(e, HealError::NothingPrintable { degenerate: 10, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("--keep-degenerate"), "{e}");
}

#[test]
fn heal_all_lines_and_points_name_no_option_that_would_not_keep_them() {
    // Every facet has two corners on one point: no option keeps such a facet, so the
    // message must not offer one.
    let facets: Vec<[[f32; 3]; 3]> = (0..10)
        .map(|i| {
            let x = i as f32 * 10.0;
            [[x, 0.0, 0.0], [x, 0.0, 0.0], [x, 5.0, 0.0]]
        })
        .collect();
    let bytes = binary(&facets, 10);
    let e = err(&bytes);
    assert!(
        matches!(
            e,
            HealError::NothingPrintable {
                degenerate: 10,
                repeated_vertex: 10,
                collapsed: 0,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("10 facets have two corners on one point"),
        "{msg}"
    );
    assert!(!msg.contains("--keep-"), "{msg}");
    let keep = RepairOptions {
        remove_degenerate: false,
        ..opts()
    };
    assert!(matches!(
        heal::repair(&bytes, &keep),
        Err(HealError::NothingPrintable { .. })
    ));
}

#[test]
fn heal_pages_on_one_spine_say_which_removals_left_nothing() {
    // 2 000 pages on one spine whose free corners lie 3.1e-5 of the diagonal apart: the
    // weld merges neighbouring corners, so pages become copies of each other (one of each
    // kept), and the survivors, four or more on every edge of the spine, are taken for faces
    // between solids. The message names both and the option that keeps them.
    let n = 2_000;
    let r = 50.0f64;
    let facets: Vec<[[f32; 3]; 3]> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / 100_000.0;
            [
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 100.0],
                [(r * a.cos()) as f32, (r * a.sin()) as f32, 50.0],
            ]
        })
        .collect();
    let bytes = binary(&facets, n as u32);
    let e = err(&bytes);
    let HealError::NothingPrintable {
        input_facets,
        duplicates,
        shared_faces,
        tiny_shell_facets,
        degenerate,
        ..
    } = e
    else {
        panic!("expected NothingPrintable, got {e:?}");
    };
    assert_eq!(input_facets, n as u64);
    assert!(duplicates > 0 && shared_faces > 0, "{e:?}");
    assert_eq!(
        duplicates + shared_faces + tiny_shell_facets + degenerate,
        n as u64,
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{duplicates} facets were copies of other facets"))
            && msg.contains(&format!(
                "{shared_faces} facets were faces between two solids"
            ))
            && msg.contains("--keep-duplicates"),
        "{msg}"
    );
    assert!(!msg.contains("no facet survived"), "{msg}");
    let keep = RepairOptions {
        remove_duplicates: false,
        ..opts()
    };
    assert!(heal::repair(&bytes, &keep).is_ok());
}

#[test]
fn heal_a_hand_built_soup_with_a_non_finite_coordinate_is_refused() {
    // The parser refuses NaN and infinity with a byte offset; a soup built in code never
    // passed through it, and a NaN in one came out as a success: a "watertight" repair with
    // the NaN corner written out and a volume of NaN.
    let positions: Vec<[f32; 3]> =
        crate::support::decode(&generate::model(5, 200, &generate::Defects::none()).stl)
            .into_iter()
            .flatten()
            .collect();
    for (bad, facet) in [(f32::NAN, 7), (f32::INFINITY, 0), (f32::NEG_INFINITY, 150)] {
        let mut p = positions.clone();
        p[3 * facet + 1][2] = bad;
        let soup = heal::stl::Soup {
            positions: p,
            format: heal::stl::Format::Binary,
            bytes: 0,
            wrong_normals: 0,
            header_facets: None,
            seconds: 0.0,
        };
        match heal::repair_soup(soup, &RepairOptions::default(), &|_| {}) {
            Err(HealError::NonFiniteSoup { facet: f }) => assert_eq!(f, facet as u64),
            other => panic!("{bad}: {:?}", other.map(|r| r.report)),
        }
    }
}
