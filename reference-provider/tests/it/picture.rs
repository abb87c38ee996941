//! The repair picture, checked by its pixels: filled holes in the hole colour where the holes
//! were (also a hole whose fill a view sees only from behind), nothing marked on a model that
//! needed no repair, never blank or clipped; and the
//! `--picture` / `--html` options of `fixmyprint repair`, bad paths and budgets included.
use std::process::Command;

use fixmyprint::heal::generate::{self, Defects};
use fixmyprint::heal::picture::{Image, PANEL, Picture, PictureOptions, colour};
use fixmyprint::heal::provenance::mark;
use fixmyprint::heal::{self, RepairOptions};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fixmyprint"))
}

/// Repair `stl` and draw its picture; also returns where (in the "after" front, top and iso
/// views) the centres of the filled facets appear.
fn draw(stl: &[u8]) -> (Image, heal::Repaired, Vec<(f32, f32)>) {
    let options = RepairOptions::default();
    let soup = heal::stl::parse(stl, &options).unwrap();
    let mut picture = Picture::new(&soup.positions, &PictureOptions::default()).unwrap();
    picture.draw_before(&soup.positions);
    let repaired = heal::repair_soup(soup, &options, &|_| {}).unwrap();
    let m = &repaired.mesh;
    let mut filled = Vec::new();
    for (f, t) in m.triangles.iter().enumerate() {
        if repaired.provenance.facets[f] & mark::FILLED != 0 {
            let c =
                [0, 1, 2].map(|a| t.iter().map(|&v| m.vertices[v as usize][a]).sum::<f32>() / 3.0);
            for col in 0..3 {
                filled.push(picture.image_position(col, 1, c));
            }
        }
    }
    let image = picture.finish(&repaired);
    (image, repaired, filled)
}

/// A strongly coloured (marked) pixel, as opposed to the grey model, the background and text.
fn marked(c: [u8; 3]) -> bool {
    let (hi, lo) = (*c.iter().max().unwrap(), *c.iter().min().unwrap());
    hi - lo > 60
}

/// The hole colour, whatever the shading: red well above green and blue.
fn hole_coloured(c: [u8; 3]) -> bool {
    let [r, g, b] = c.map(i32::from);
    r - g.max(b) > 45 && (g - b).abs() < 30
}

fn in_panel(image: &Image, col: usize, row: usize) -> impl Iterator<Item = [u8; 3]> + '_ {
    let (x0, y0, side) = Image::panel_rect(col, row);
    (y0..y0 + side).flat_map(move |y| (x0..x0 + side).map(move |x| image.pixel(x, y)))
}

/// Every panel shows the model (a fair share of its pixels are not background) and nothing
/// of it touches the panel's edges (a band 2 to 6 pixels inside the frame is background).
fn assert_framed(image: &Image) {
    for row in 0..2 {
        for col in 0..3 {
            let drawn = in_panel(image, col, row)
                .filter(|&c| c != colour::BACKGROUND)
                .count();
            assert!(
                drawn > PANEL * PANEL / 20,
                "panel {col},{row} nearly blank: {drawn} pixels"
            );
            let (x0, y0, side) = Image::panel_rect(col, row);
            for d in 2..6 {
                for i in 2..side - 2 {
                    for (x, y) in [
                        (x0 + i, y0 + d),
                        (x0 + i, y0 + side - 1 - d),
                        (x0 + d, y0 + i),
                        (x0 + side - 1 - d, y0 + i),
                    ] {
                        assert_eq!(
                            image.pixel(x, y),
                            colour::BACKGROUND,
                            "panel {col},{row}: drawn at its edge ({x}, {y})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn filled_holes_show_in_the_hole_colour_where_the_holes_were() {
    let d = Defects {
        holes: 6,
        ..Defects::none()
    };
    let g = generate::model(11, 6000, &d);
    let (image, repaired, filled) = draw(&g.stl);
    assert!(repaired.report.stages.holes.facets_added > 0);
    assert_framed(&image);
    // At every filled facet's centre (in every "after" view where it is not hidden, the ring
    // marks it anyway) the hole colour is within a ring's reach.
    for &(x, y) in &filled {
        let near = (-14i32..=14).any(|dy| {
            (-14i32..=14).any(|dx| {
                let (px, py) = ((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                hole_coloured(image.pixel(px, py))
            })
        });
        assert!(near, "no hole colour near ({x}, {y})");
    }
    // The hole colour is in the "after" views, never in the "before" views.
    for col in 0..3 {
        assert!(
            in_panel(&image, col, 1).any(hole_coloured),
            "after view {col}"
        );
        assert!(
            !in_panel(&image, col, 0).any(hole_coloured),
            "before view {col}"
        );
    }
}

#[test]
fn a_model_that_needed_no_repair_has_nothing_marked() {
    let g = generate::model(12, 6000, &Defects::none());
    let (image, repaired, _) = draw(&g.stl);
    assert!(repaired.provenance.is_untouched());
    assert_framed(&image);
    for row in 0..2 {
        for col in 0..3 {
            let n = in_panel(&image, col, row).filter(|&c| marked(c)).count();
            assert_eq!(n, 0, "panel {col},{row} has {n} marked pixels");
        }
    }
}

#[test]
fn flips_and_noise_shells_are_marked_in_their_colours() {
    let d = Defects {
        flip_fraction: 0.1,
        noise_shells: 6,
        invert_shell: true,
        ..Defects::none()
    };
    let g = generate::model(13, 6000, &d);
    let (image, repaired, _) = draw(&g.stl);
    assert!(repaired.report.stages.shells.tiny_removed > 0);
    let is = |want: [u8; 3]| {
        move |c: [u8; 3]| {
            // Same hue as `want` (shading only scales it, blending mixes in grey).
            let w = want.map(f32::from);
            let c = c.map(f32::from);
            let k = (c[0] + c[1] + c[2]) / (w[0] + w[1] + w[2]);
            (0..3).all(|i| (c[i] - w[i] * k).abs() < 12.0) && marked(c.map(|x| x as u8))
        }
    };
    let after: Vec<[u8; 3]> = (0..3).flat_map(|col| in_panel(&image, col, 1)).collect();
    let before: Vec<[u8; 3]> = (0..3).flat_map(|col| in_panel(&image, col, 0)).collect();
    assert!(
        after.iter().any(|&c| is(colour::WINDING)(c)),
        "winding colour"
    );
    assert!(
        after.iter().any(|&c| is(colour::OUTWARD)(c)),
        "outward colour"
    );
    // Removed noise is ringed in the "before" views and absent from the "after" ones.
    assert!(before.contains(&colour::REMOVED), "removed colour before");
    assert!(!after.contains(&colour::REMOVED), "removed colour after");
}

fn read_png(path: &std::path::Path) -> Image {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    Image {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    }
}

#[test]
fn repair_writes_the_picture_and_the_html_page() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out, pic, html) = (
        dir.path().join("in.stl"),
        dir.path().join("out.stl"),
        dir.path().join("r.png"),
        dir.path().join("r.html"),
    );
    let d = Defects {
        holes: 4,
        ..Defects::none()
    };
    std::fs::write(&inp, generate::model(14, 5000, &d).stl).unwrap();
    let o = bin()
        .args(["repair", "-q"])
        .arg(&inp)
        .arg(&out)
        .arg("--picture")
        .arg(&pic)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = read_png(&pic);
    assert_eq!(image.width, 3 * PANEL);
    assert_framed(&image);
    assert!(in_panel(&image, 0, 1).any(hole_coloured));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("src=\"data:image/png;base64,"), "{page:.300}");
    assert!(page.contains("<th>holes filled</th><td>4"), "{page:.2000}");
    assert!(!page.contains("src=\"http"), "self-contained");
}

#[test]
fn a_picture_that_cannot_be_made_is_one_line_and_the_repair_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.stl"), dir.path().join("out.stl"));
    std::fs::write(&inp, generate::broken_model(3, 3000)).unwrap();
    let cases: [(&str, Vec<std::ffi::OsString>); 2] = [
        (
            "unwritable path",
            vec![
                "--picture".into(),
                dir.path().join("no/such/dir/r.png").into_os_string(),
            ],
        ),
        (
            "over the budget",
            vec![
                "--html".into(),
                dir.path().join("r.html").into_os_string(),
                "--picture-max-facets".into(),
                "100".into(),
            ],
        ),
    ];
    for (name, extra) in cases {
        let _ = std::fs::remove_file(&out);
        let o = bin()
            .args(["repair", "-q"])
            .arg(&inp)
            .arg(&out)
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.starts_with("error: "), "{name}: {err}");
        let stl = std::fs::read(&out).unwrap();
        let n = u32::from_le_bytes(stl[80..84].try_into().unwrap()) as usize;
        assert!(
            n > 0 && stl.len() == 84 + 50 * n,
            "{name}: the repair was written"
        );
    }
    assert!(!dir.path().join("r.html").exists());
}

/// A 10 mm cube of `n` × `n` squares per face (two facets each, wound outward), as ASCII
/// STL, without the squares of face `+y` (the back, away from the front view) whose
/// (x, z) cell is in `hole`.
fn cube_with_back_hole(n: usize, hole: std::ops::Range<usize>) -> String {
    use std::fmt::Write as _;
    let step = 10.0 / n as f32;
    let mut stl = String::from("solid cube\n");
    for axis in 0..3 {
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        for side in [0.0f32, 10.0] {
            for i in 0..n {
                for j in 0..n {
                    // On +y, u is z and v is x.
                    if axis == 1 && side > 0.0 && hole.contains(&i) && hole.contains(&j) {
                        continue;
                    }
                    let p = |di: usize, dj: usize| {
                        let mut q = [0.0f32; 3];
                        q[axis] = side;
                        q[u] = (i + di) as f32 * step;
                        q[v] = (j + dj) as f32 * step;
                        q
                    };
                    // (p00, p10, p11) has normal +axis; the low side is wound the other way.
                    let mut tris = [[p(0, 0), p(1, 0), p(1, 1)], [p(0, 0), p(1, 1), p(0, 1)]];
                    if side == 0.0 {
                        for t in &mut tris {
                            t.swap(1, 2);
                        }
                    }
                    for t in tris {
                        stl.push_str("facet normal 0 0 0\nouter loop\n");
                        for q in t {
                            let _ = writeln!(stl, "vertex {} {} {}", q[0], q[1], q[2]);
                        }
                        stl.push_str("endloop\nendfacet\n");
                    }
                }
            }
        }
    }
    stl.push_str("endsolid cube\n");
    stl
}

#[test]
fn a_hole_seen_only_from_behind_is_still_ringed_in_the_hole_colour() {
    // The hole is the 2 × 2 mm square x, z in [4, 6] of the back face (y = 10): the front
    // view (from −y) and the iso view (from +x, −y, +z) see its fill only from behind,
    // through the cube's near faces.
    let stl = cube_with_back_hole(10, 4..6);
    let (image, repaired, _) = draw(stl.as_bytes());
    assert_eq!(repaired.report.holes_filled, 1);
    assert!(repaired.report.watertight);
    assert_framed(&image);
    let options = RepairOptions::default();
    let soup = heal::stl::parse(stl.as_bytes(), &options).unwrap();
    let picture = Picture::new(&soup.positions, &PictureOptions::default()).unwrap();
    for (col, view) in [(0, "front"), (2, "iso")] {
        // The hole's outline on screen, and the bounding box of its corners.
        let corners = [
            [4.0, 10.0, 4.0],
            [6.0, 10.0, 4.0],
            [6.0, 10.0, 6.0],
            [4.0, 10.0, 6.0],
        ]
        .map(|p| picture.image_position(col, 1, p));
        let (x0, x1) = corners
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), c| (a.min(c.0), b.max(c.0)));
        let (y0, y1) = corners
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), c| (a.min(c.1), b.max(c.1)));
        let region: Vec<[u8; 3]> = (y0 as usize..=y1 as usize)
            .flat_map(|y| (x0 as usize..=x1 as usize).map(move |x| (x, y)))
            .map(|(x, y)| image.pixel(x, y))
            .collect();
        let red = region.iter().filter(|&&c| hole_coloured(c)).count();
        // Marked: the rings around the hidden fill show in the hole colour...
        assert!(
            red >= 20,
            "{view}: {red} hole-coloured pixels over the hidden hole"
        );
        // ...but the fill itself stays hidden behind the near faces (drawn over them, it
        // would cover the whole region).
        assert!(
            red * 2 < region.len(),
            "{view}: {red} of {} pixels over the hidden hole are in the hole colour: the \
             fill shows through the surface",
            region.len()
        );
        // Nothing of it in the "before" view.
        assert!(
            !in_panel(&image, col, 0).any(hole_coloured),
            "{view}: hole colour before"
        );
    }
    // The top view (from +z) sees the back face edge on: the hole is still marked near it.
    let (x, y) = picture.image_position(1, 1, [5.0, 10.0, 10.0]);
    let near = (-14i32..=14).any(|dy| {
        (-14i32..=14).any(|dx| {
            hole_coloured(image.pixel((x as i32 + dx) as usize, (y as i32 + dy) as usize))
        })
    });
    assert!(near, "top: no hole colour near the back edge at ({x}, {y})");
}
