//! Pages looked at as a person would: loaded in a real headless Chromium (Debian's
//! `chromium`; `.ci/run` installs it, and without it these tests fail naming the package),
//! screenshot decoded and checked by its pixels, DOM read after the page's scripts ran.
//!
//! - The HTML report of `fixmyprint repair --html`: the picture is on screen whole (not
//!   clipped, page background around it), not blank, with the hole colour in the "after"
//!   views of a model that had holes and no change colour on one that needed no repair.
//! - The broker mock's per-job timeline after a real story run: the job's messages in the
//!   order they happened; and, opened with the owner's API key, a screenshot on which every
//!   message of the job is a row (in order, each in its direction's colour, the refused ones
//!   tinted) and the repair picture the broker keeps is drawn whole below them, its filled
//!   holes in the hole colour.

use std::time::Duration;

use e2e::browser::{Browser, Screenshot};
use fixmyprint::heal::generate::{self, Defects};
use fixmyprint::heal::picture::{Image, PANEL, Picture, PictureOptions, colour};
use fixmyprint::heal::{self, RepairOptions};

fn browser() -> Browser {
    Browser::find().unwrap_or_else(|e| panic!("{e}"))
}

/// What `fixmyprint repair IN OUT --html R.html` writes for `stl`, and the picture in it.
fn report_page(stl: &[u8]) -> (String, Image, heal::Repaired) {
    let options = RepairOptions::default();
    let soup = heal::stl::parse(stl, &options).unwrap();
    let mut picture = Picture::new(&soup.positions, &PictureOptions::default()).unwrap();
    picture.draw_before(&soup.positions);
    let repaired = heal::repair_soup(soup, &options, &|_| {}).unwrap();
    let image = picture.finish(&repaired);
    let html = image.to_html("model.stl", &repaired.report);
    (html, image, repaired)
}

/// Where the picture's top-left corner is on the screenshot: the offset at which a grid of
/// its pixels (corners included) all match the screen, within 3 per channel.
fn find_picture(shot: &Screenshot, image: &Image) -> Option<(usize, usize)> {
    find_pixels(shot, image.width, image.height, |x, y| image.pixel(x, y))
}

/// Where a `width` × `height` picture whose pixels `pixel` gives is on the screenshot, as
/// [`find_picture`].
fn find_pixels(
    shot: &Screenshot,
    width: usize,
    height: usize,
    pixel: impl Fn(usize, usize) -> [u8; 3],
) -> Option<(usize, usize)> {
    let probes: Vec<((usize, usize), [u8; 3])> = (0..=16)
        .flat_map(|i| (0..=16).map(move |j| (i, j)))
        .map(|(i, j)| ((width - 1) * i / 16, (height - 1) * j / 16))
        .map(|(x, y)| ((x, y), pixel(x, y)))
        .collect();
    let close = |a: [u8; 3], b: [u8; 3]| (0..3).all(|k| a[k].abs_diff(b[k]) <= 3);
    for oy in 0..=shot.height.checked_sub(height)? {
        for ox in 0..=shot.width.checked_sub(width)? {
            if probes
                .iter()
                .all(|&((x, y), c)| close(shot.pixel(ox + x, oy + y), c))
            {
                return Some((ox, oy));
            }
        }
    }
    None
}

/// The hole colour, whatever the shading: red well above green and blue.
fn hole_coloured(c: [u8; 3]) -> bool {
    let [r, g, b] = c.map(i32::from);
    r - g.max(b) > 45 && (g - b).abs() < 30
}

/// A strongly coloured (marked) pixel, as opposed to the grey model, the background and text.
fn marked(c: [u8; 3]) -> bool {
    let (hi, lo) = (*c.iter().max().unwrap(), *c.iter().min().unwrap());
    hi - lo > 60
}

/// The screen's pixels of view `col` (0 front, 1 top, 2 iso) in row `row` (0 before, 1
/// after), the picture being at `at`.
fn panel_on_screen(shot: &Screenshot, at: (usize, usize), col: usize, row: usize) -> Vec<[u8; 3]> {
    let (x0, y0, side) = Image::panel_rect(col, row);
    (y0..y0 + side)
        .flat_map(|y| (x0..x0 + side).map(move |x| (x, y)))
        .map(|(x, y)| shot.pixel(at.0 + x, at.1 + y))
        .collect()
}

/// Loads the report page of `stl` and returns the screenshot, the picture's place on it and
/// the repair.
async fn look_at_report(stl: &[u8]) -> (Screenshot, (usize, usize), heal::Repaired) {
    let (html, image, repaired) = report_page(stl);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, html).unwrap();
    let url = format!("file://{}", page.display());
    let shot = browser()
        .screenshot(&url, 1280, 1200, Duration::from_secs(2))
        .await
        .unwrap();
    let at = find_picture(&shot, &image).unwrap_or_else(|| {
        panic!(
            "the picture ({}×{}) is not on the {}×{} screenshot, whole and unscaled",
            image.width, image.height, shot.width, shot.height
        )
    });
    // Not clipped: the page background shows on every side of it.
    let bg = [250, 250, 250];
    assert!(at.0 >= 4 && at.0 + image.width + 4 <= shot.width, "{at:?}");
    assert!(
        at.1 >= 4 && at.1 + image.height + 4 <= shot.height,
        "{at:?}"
    );
    for y in (at.1..at.1 + image.height).step_by(7) {
        assert_eq!(shot.pixel(at.0 - 2, y), bg, "left margin at y {y}");
        assert_eq!(shot.pixel(at.0 + image.width + 1, y), bg, "right margin");
    }
    for x in (at.0..at.0 + image.width).step_by(7) {
        assert_eq!(shot.pixel(x, at.1 + image.height + 1), bg, "bottom margin");
    }
    // Not blank: every view shows the model.
    for row in 0..2 {
        for col in 0..3 {
            let drawn = panel_on_screen(&shot, at, col, row)
                .into_iter()
                .filter(|&c| c != colour::BACKGROUND)
                .count();
            assert!(
                drawn > PANEL * PANEL / 20,
                "view {col},{row} nearly blank on screen: {drawn} pixels"
            );
        }
    }
    (shot, at, repaired)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_filled_holes_in_the_hole_colour() {
    let d = Defects {
        holes: 6,
        ..Defects::none()
    };
    let g = generate::model(11, 6000, &d);
    let (shot, at, repaired) = look_at_report(&g.stl).await;
    assert!(repaired.report.stages.holes.facets_added > 0);
    for col in 0..3 {
        let after = panel_on_screen(&shot, at, col, 1);
        let red = after.iter().filter(|&&c| hole_coloured(c)).count();
        assert!(
            red > 50,
            "after view {col}: {red} pixels in the hole colour"
        );
        let before = panel_on_screen(&shot, at, col, 0);
        assert!(
            !before.into_iter().any(hole_coloured),
            "before view {col} shows the hole colour"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_of_a_sound_model_shows_no_change() {
    let g = generate::model(12, 6000, &Defects::none());
    let (shot, at, repaired) = look_at_report(&g.stl).await;
    assert!(repaired.provenance.is_untouched());
    for row in 0..2 {
        for col in 0..3 {
            let n = panel_on_screen(&shot, at, col, row)
                .into_iter()
                .filter(|&c| marked(c))
                .count();
            assert_eq!(n, 0, "view {col},{row} has {n} marked pixels on screen");
        }
    }
}

/// The rows of the timeline table in a dumped DOM, as text with the tags left in.
fn timeline_rows(dom: &str) -> Vec<String> {
    let body = dom
        .split_once("<table id=\"timeline\">")
        .and_then(|(_, t)| t.split_once("</table>"))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no timeline table in {dom:.2000}"));
    body.split("<tr class=\"")
        .skip(1)
        .map(|r| r.replace("&gt;", ">"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_shows_a_jobs_messages_in_order() {
    use diax_sdk::wire::Scheme;
    use e2e::stack::{Stack, StackOptions};
    use e2e::story::{self, Quiet};

    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let d = Defects {
        holes: 4,
        ..Defects::none()
    };
    let g = generate::model(21, 4000, &d);
    let outcome = story::play(&stack, "gareth.stl", g.stl, Scheme::V1, &Quiet)
        .await
        .unwrap();
    let job = outcome.job.job_id.to_string();
    let url = format!("{}/inspector/jobs/{job}", stack.broker.base_url());
    let dom = browser()
        .dump_dom(&url, Duration::from_secs(1))
        .await
        .unwrap();
    let rows = timeline_rows(&dom);
    // The story in the order it happened: each step is found after the previous one.
    let steps: [(&str, &[&str]); 11] = [
        (
            "the user asks for the job",
            &["user → broker", "POST /v1/jobs<"],
        ),
        (
            "the offer, refused: no account",
            &["broker → provider", "job.offer", ">401<"],
        ),
        ("the user retries", &["user → broker", "/retry<"]),
        (
            "the offer, refused: no money",
            &["broker → provider", "job.offer", ">402<"],
        ),
        ("the user retries again", &["user → broker", "/retry<"]),
        (
            "the offer, accepted",
            &["broker → provider", "job.offer", ">202<"],
        ),
        (
            "the input with a temporary credential",
            &["broker → provider", "job.input"],
        ),
        (
            "the provider downloads the input",
            &["provider → broker", "temporary credential accepted"],
        ),
        (
            "the provider reports completion",
            &["provider → broker", "job.completed"],
        ),
        (
            "the broker fetches the result",
            &["broker → provider", "result fetched"],
        ),
        (
            "the user downloads the result",
            &["user → broker", "result downloaded by its owner"],
        ),
    ];
    let mut at = 0;
    for (what, needles) in steps {
        let found = rows[at..]
            .iter()
            .position(|r| needles.iter().all(|n| r.contains(n)))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no row with {needles:?} after row {at}; rows:\n{}",
                    rows.join("\n")
                )
            });
        at += found + 1;
    }
    // The provider's progress events and the user's notification are there too.
    assert!(rows.iter().any(|r| r.contains("job.progress")));
    assert!(
        rows.iter()
            .any(|r| r.contains("broker → user") && r.contains("notification to the user"))
    );
    // Every logged message about the job is a row.
    let logged = stack
        .broker_api
        .messages(&broker_mock::client::MessageFilter {
            job_id: Some(job.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        logged.messages.len(),
        "rows:\n{}",
        rows.join("\n")
    );
    // Opened by Gareth with his API key, the page shows the picture of the new version.
    let result = outcome.job.result.clone().unwrap();
    let png = outcome
        .gareth
        .client
        .report(&result.model_id, result.version)
        .await
        .unwrap();
    let picture = Screenshot::decode(&png).unwrap();
    let owner_url = format!(
        "{url}#api_key={}",
        url_encode(outcome.gareth.client.api_key())
    );
    let dom = browser()
        .dump_dom(&owner_url, Duration::from_secs(2))
        .await
        .unwrap();
    let img = dom
        .split_once("<img id=\"picture-img\"")
        .and_then(|(_, t)| t.split_once('>'))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no picture element in {dom:.3000}"));
    assert!(
        img.contains("src=\"blob:") && !img.contains("hidden"),
        "{img}"
    );
    assert!(
        dom.contains(&format!("{} v{}</p>", result.model_id, result.version)),
        "the picture's status line does not name the version"
    );
    // The screenshot: the table's rows as drawn, in order, match the log (which now holds
    // the page's own GET of the job too: the table as served before the screenshot's own
    // page script runs); the picture is below them, whole, with its filled holes in the hole
    // colour.
    let rows = timeline_rows(
        &browser()
            .dump_dom(&url, Duration::from_secs(1))
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), logged.messages.len() + 1);
    assert!(
        rows.last()
            .unwrap()
            .contains(&format!("GET /v1/jobs/{job}<"))
    );
    let shot = browser()
        .screenshot(&owner_url, 1400, 4000, Duration::from_secs(2))
        .await
        .unwrap();
    let drawn = drawn_rows(&shot);
    let expected: Vec<DrawnRow> = rows
        .iter()
        .map(|r| DrawnRow {
            out: r.starts_with("out"),
            refused: r.split('"').next().is_some_and(|c| c.contains("refused")),
            bottom: 0,
        })
        .collect();
    assert_eq!(
        drawn.iter().map(|r| (r.out, r.refused)).collect::<Vec<_>>(),
        expected
            .iter()
            .map(|r| (r.out, r.refused))
            .collect::<Vec<_>>(),
        "the rows on screen (outgoing?, refused?) are not the job's messages in order"
    );
    assert!(expected.iter().any(|r| r.refused) && expected.iter().any(|r| !r.out));
    let at = find_pixels(&shot, picture.width, picture.height, |x, y| {
        picture.pixel(x, y)
    })
    .unwrap_or_else(|| {
        panic!(
            "the repair picture ({}×{}) is not on the {}×{} screenshot, whole and unscaled",
            picture.width, picture.height, shot.width, shot.height
        )
    });
    let last = drawn.last().unwrap().bottom;
    assert!(
        at.1 > last,
        "the picture (at y {}) is not below the rows (end at y {last})",
        at.1
    );
    for col in 0..3 {
        let after = panel_on_screen(&shot, at, col, 1);
        let red = after.iter().filter(|&&c| hole_coloured(c)).count();
        assert!(
            red > 50,
            "after view {col} on screen: {red} pixels in the hole colour"
        );
        let before = panel_on_screen(&shot, at, col, 0);
        assert!(
            !before.into_iter().any(hole_coloured),
            "before view {col} on screen shows the hole colour"
        );
    }
    // A job the log knows nothing of gets a page saying so; a malformed id a problem.
    let unknown = stack
        .http
        .get(format!(
            "{}/inspector/jobs/job_AAAAAAAAAAAAAAAAAAAAAAAA",
            stack.broker.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("no message about this job")
    );
    let bad = stack
        .http
        .get(format!(
            "{}/inspector/jobs/%3Cscript%3E",
            stack.broker.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    stack.shutdown().await;
}

/// `s` percent-encoded but for unreserved characters.
fn url_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One row of the timeline table as drawn.
#[derive(Debug)]
struct DrawnRow {
    /// The row's left border is the colour of a message the broker sent.
    out: bool,
    /// Its background is the tint of a refused exchange.
    refused: bool,
    /// The screen row of its bottom line.
    bottom: usize,
}

/// The rows of the timeline table on a screenshot, top to bottom, read from the pixels: each
/// body row's first cell has a left border in its direction's colour (sent by the broker,
/// received by it) and a background (white, or tinted when refused), and ends at a one-pixel
/// line; the header row has no coloured border.
fn drawn_rows(shot: &Screenshot) -> Vec<DrawnRow> {
    const OUT: [u8; 3] = [0x4d, 0x7c, 0xfe];
    const IN: [u8; 3] = [0x31, 0xa2, 0x4c];
    const LINE: [u8; 3] = [0xe3, 0xe6, 0xeb];
    const WHITE: [u8; 3] = [255, 255, 255];
    const REFUSED: [u8; 3] = [0xff, 0xf1, 0xf0];
    let direction = |c: [u8; 3]| (c == OUT || c == IN).then_some(c == OUT);
    // The border's column: the leftmost one in a direction colour; the cell's padding just
    // right of the border.
    let (border, y0) = (0..shot.width.min(200))
        .find_map(|x| {
            (0..shot.height)
                .find(|&y| direction(shot.pixel(x, y)).is_some())
                .map(|y| (x, y))
        })
        .unwrap_or_else(|| panic!("no row border in the screenshot"));
    let inside = (border..shot.width)
        .find(|&x| direction(shot.pixel(x, y0)).is_none())
        .unwrap()
        + 2;
    let mut rows = Vec::new();
    let mut open: Option<(bool, bool)> = None;
    for y in y0..shot.height {
        let Some(out) = direction(shot.pixel(border, y)) else {
            assert!(open.is_none(), "a row without its bottom line at y {y}");
            continue;
        };
        match shot.pixel(inside, y) {
            // The line above the first row meets its border.
            LINE if open.is_none() => {}
            LINE => {
                let (out, refused) = open.take().unwrap();
                rows.push(DrawnRow {
                    out,
                    refused,
                    bottom: y,
                });
            }
            c @ (WHITE | REFUSED) => match open {
                None => open = Some((out, c == REFUSED)),
                Some(o) => assert_eq!(o, (out, c == REFUSED), "a row changes colour at y {y}"),
            },
            c => panic!("unexpected colour {c:?} in a row's padding at ({inside}, {y})"),
        }
    }
    assert!(open.is_none(), "the last row is cut off by the window");
    rows
}
