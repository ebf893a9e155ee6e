//! Quality against kept fraction: one curve per method (FastGen over T, the window, H2O,
//! SnapKV and Ada-KV baselines at FastGen's budgets) in each panel. `draw_quality` draws the
//! teacher-forced figure (mean KLD on a log scale, same-top rate, needle hits); `draw_panels`
//! any row of panels, each with its own kept fractions (the sweep's HumanEval and long
//! generation figures measure them on their own answers). Both SVG and PNG lay out text with
//! a TrueType font: without one (see `fastgen::plot::FONT_PATHS`, registered once for both
//! kinds of figure) the figure is skipped.

use crate::compress::plot::{bitmap_font, FONT};
use crate::error::{Error, Result};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::Path;

/// One point of a method's curve.
#[derive(Debug, Clone)]
pub struct Point {
    pub method: String,
    /// Share of the full cache's entries kept.
    pub kept: f64,
    pub mean_kld: f64,
    pub same_top: f64,
    /// Needle hits as a share of questions (None when not run).
    pub niah: Option<f64>,
}

const METHODS: [(&str, RGBColor); 7] = [
    ("fastgen", RGBColor(217, 95, 2)),
    ("fastgen-paper", RGBColor(231, 41, 138)),
    ("window", RGBColor(31, 120, 180)),
    ("h2o", RGBColor(102, 166, 30)),
    ("snapkv", RGBColor(117, 112, 179)),
    ("adakv", RGBColor(166, 118, 29)),
    ("full", RGBColor(0, 0, 0)),
];

/// One panel: a value per arm against that arm's kept fraction.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// A log y axis (values below `KLD_FLOOR` are drawn at it).
    pub log: bool,
    /// (method, kept fraction, value).
    pub points: Vec<(String, f64, f64)>,
}

impl Panel {
    /// `y` against each point's kept fraction, for the points that have it.
    fn of(points: &[Point], title: &str, log: bool, y: impl Fn(&Point) -> Option<f64>) -> Panel {
        Panel {
            title: title.into(),
            log,
            points: points
                .iter()
                .filter_map(|p| y(p).map(|v| (p.method.clone(), p.kept, v)))
                .collect(),
        }
    }
}

/// Smallest KLD drawn on the log axis (0 has no place on it).
const KLD_FLOOR: f64 = 1e-5;

type Series = Vec<(String, RGBColor, Vec<(f64, f64)>)>;

/// Each method's points joined by a line, with a legend.
fn curves<'a, DB: DrawingBackend + 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, DB, CT>,
    series: Series,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    for (name, colour, pts) in series {
        chart
            .draw_series(std::iter::once(PathElement::new(
                pts.clone(),
                colour.stroke_width(2),
            )))
            .map_err(|x| e(&x))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()
        .map_err(|x| e(&x))
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let top = p.points.iter().map(|q| q.2).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(&p.title, (FONT, 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56);
    let series: Series = METHODS
        .iter()
        .map(|&(m, c)| {
            let mut pts: Vec<(f64, f64)> = (p.points.iter())
                .filter(|q| q.0 == m)
                .map(|q| (q.1, if p.log { q.2.max(KLD_FLOOR) } else { q.2 }))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (m.to_string(), c, pts)
        })
        .filter(|(_, _, pts)| !pts.is_empty())
        .collect();
    if p.log {
        let mut c = chart
            .build_cartesian_2d(
                0f64..1.02,
                (KLD_FLOOR..(top * 2.0).max(KLD_FLOOR * 10.0)).log_scale(),
            )
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("kept fraction of the KV cache")
            .label_style((FONT, 12))
            .draw()
            .map_err(|x| e(&x))?;
        curves(&mut c, series)
    } else {
        let mut c = chart
            .build_cartesian_2d(0f64..1.02, 0f64..(top * 1.05).max(1.0))
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("kept fraction of the KV cache")
            .label_style((FONT, 12))
            .draw()
            .map_err(|x| e(&x))?;
        curves(&mut c, series)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|x| x.to_string())?;
    let root = root.titled(title, (FONT, 18)).map_err(|x| x.to_string())?;
    for (area, p) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        panel(area, p)?;
    }
    root.present().map_err(|x| x.to_string())
}

/// Writes the teacher-forced figure (mean KLD, same top, and needle hits when they ran) to
/// `svg` and `png`; `false` (and nothing written) when no font is found.
pub fn draw_quality(points: &[Point], title: &str, svg: &Path, png: &Path) -> Result<bool> {
    let mut panels = vec![
        Panel::of(points, "mean KLD vs full (log)", true, |p| Some(p.mean_kld)),
        Panel::of(points, "same top token (share)", false, |p| {
            Some(p.same_top)
        }),
    ];
    let needles = Panel::of(points, "needle hits (share)", false, |p| p.niah);
    if !needles.points.is_empty() {
        panels.push(needles);
    }
    draw_panels(&panels, title, svg, png)
}

/// Writes one row of `panels` to `svg` and `png`; `false` (and nothing written) when no font
/// is found or there are no panels.
pub fn draw_panels(panels: &[Panel], title: &str, svg: &Path, png: &Path) -> Result<bool> {
    // 500 pixels a panel, and room for the figure's title over a single one.
    let size = ((500 * panels.len() as u32).max(800), 480);
    let fail = |p: &Path, msg: String| Error::io(p, std::io::Error::other(msg));
    if panels.is_empty() || !bitmap_font() {
        return Ok(false);
    }
    draw(
        &SVGBackend::new(svg, size).into_drawing_area(),
        panels,
        title,
    )
    .map_err(|m| fail(svg, m))?;
    draw(
        &BitMapBackend::new(png, size).into_drawing_area(),
        panels,
        title,
    )
    .map_err(|m| fail(png, m))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_files_when_a_font_exists() {
        let p = |m: &str, kept, kld| Point {
            method: m.into(),
            kept,
            mean_kld: kld,
            same_top: 0.9,
            niah: Some(0.5),
        };
        let pts = [
            p("full", 1.0, 0.0),
            p("fastgen", 0.6, 0.02),
            p("fastgen", 0.8, 0.005),
        ];
        let dir = std::env::temp_dir().join(format!("fastgen-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (svg, png) = (dir.join("q.svg"), dir.join("q.png"));
        let drawn = draw_quality(&pts, "test", &svg, &png).unwrap();
        assert_eq!(drawn, bitmap_font());
        if drawn {
            assert!(std::fs::read_to_string(&svg).unwrap().contains("fastgen"));
            assert!(png.metadata().unwrap().len() > 1000);
        }
        // One panel of its own kept fractions; no panels, no figure.
        let one = Panel {
            title: "pass@1".into(),
            log: false,
            points: vec![("full".into(), 1.0, 0.5), ("fastgen".into(), 0.7, 0.25)],
        };
        let drawn = draw_panels(&[one], "one", &svg, &png).unwrap();
        assert_eq!(drawn, bitmap_font());
        if drawn {
            assert!(std::fs::read_to_string(&svg).unwrap().contains("pass@1"));
        }
        assert!(!draw_panels(&[], "none", &svg, &png).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
