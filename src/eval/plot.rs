//! Quality against kept fraction: one curve per method (FastGen over T, the window, H2O,
//! SnapKV and Ada-KV baselines at FastGen's budgets), three panels: mean KLD (log scale),
//! same-top rate and needle hits. Both SVG and PNG lay out text with a TrueType font: without
//! one (see `fastgen::plot::FONT_PATHS`, registered once for both kinds of figure) the figure
//! is skipped.

use crate::error::{Error, Result};
use crate::fastgen::plot::{bitmap_font, FONT};
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
    points: &[Point],
    title: &str,
    log: bool,
    y: &dyn Fn(&Point) -> Option<f64>,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let ys: Vec<f64> = points.iter().filter_map(y).collect();
    let top = ys.iter().copied().fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56);
    let series: Series = METHODS
        .iter()
        .map(|&(m, c)| {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.method == m)
                .filter_map(|p| y(p).map(|v| (p.kept, if log { v.max(KLD_FLOOR) } else { v })))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (m.to_string(), c, pts)
        })
        .filter(|(_, _, pts)| !pts.is_empty())
        .collect();
    if log {
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
    points: &[Point],
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|x| x.to_string())?;
    let root = root.titled(title, (FONT, 18)).map_err(|x| x.to_string())?;
    let panels = root.split_evenly((1, 3));
    panel(&panels[0], points, "mean KLD vs full (log)", true, &|p| {
        Some(p.mean_kld)
    })?;
    panel(&panels[1], points, "same top token (share)", false, &|p| {
        Some(p.same_top)
    })?;
    panel(&panels[2], points, "needle hits (share)", false, &|p| {
        p.niah
    })?;
    root.present().map_err(|x| x.to_string())
}

/// Writes the figure to `svg` and `png`; `false` (and nothing written) when no font is
/// found.
pub fn draw_quality(points: &[Point], title: &str, svg: &Path, png: &Path) -> Result<bool> {
    let size = (1500, 480);
    let fail = |p: &Path, msg: String| Error::io(p, std::io::Error::other(msg));
    if !bitmap_font() {
        return Ok(false);
    }
    draw(
        &SVGBackend::new(svg, size).into_drawing_area(),
        points,
        title,
    )
    .map_err(|m| fail(svg, m))?;
    draw(
        &BitMapBackend::new(png, size).into_drawing_area(),
        points,
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
