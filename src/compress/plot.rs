//! The policy map: one cell per (layer, KV head) coloured by its policy, with the head's
//! recovery, and each layer's kept share of tokens beside it (the paper's Figure 3, for
//! models with a few KV heads per layer).
//!
//! Drawn with `plotters` as SVG (text as SVG text, no font needed) and PNG. The PNG's text
//! needs a TrueType font: the first of [`FONT_PATHS`] that exists (DejaVu Sans from Debian's
//! `fonts-dejavu-core`, or Liberation / FreeFont); without one the PNG is drawn without text.

use super::stats::KvReport;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// Fonts tried, in order, for text in the PNG.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// The family every figure draws its text in (registered by [`bitmap_font`]).
pub(crate) const FONT: &str = "sans-serif";

/// Registers the first font found; `true` when text can be drawn in bitmaps.
pub(crate) fn bitmap_font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Colours by position in the candidate list (cheapest first), then for other policies.
const PALETTE: &[RGBColor] = &[
    RGBColor(117, 112, 179), // special
    RGBColor(102, 166, 30),  // special+punct
    RGBColor(31, 120, 180),  // special+punct+frequent
    RGBColor(230, 171, 2),   // special+punct+frequent+local
    RGBColor(217, 95, 2),    // full
    RGBColor(231, 41, 138),
    RGBColor(27, 158, 119),
    RGBColor(166, 118, 29),
];

/// What to draw.
pub struct MapSpec<'a> {
    pub report: &'a KvReport,
    /// Title line, e.g. the model and prompt.
    pub title: String,
    /// Policies in legend order (the candidate list); others are appended.
    pub order: Vec<String>,
    /// Per layer and KV head: the recovery of the candidate before the chosen one
    /// (`HeadState::shortfall`), shown in full cells.
    pub shortfall: Vec<Vec<Option<f64>>>,
}

/// Where the files went and whether the PNG has text.
pub struct MapFiles {
    pub png_has_text: bool,
}

const CELL_W: i32 = 96;
const CELL_H: i32 = 20;
const LEFT: i32 = 70;
const TOP: i32 = 64;
const BAR_W: i32 = 120;
const GAP: i32 = 24;
const LEGEND_W: i32 = 260;

fn size(spec: &MapSpec) -> (u32, u32) {
    let n_kv = spec.report.policies.first().map_or(1, |l| l.len()) as i32;
    let n_layers = spec.report.policies.len() as i32;
    let w = LEFT + n_kv * CELL_W + GAP + BAR_W + GAP + LEGEND_W;
    // Wide enough for the title line (about 8 px per character at its size) when the model
    // has few KV heads (Gemma 3: one).
    let w = w.max(20 + 8 * spec.title.chars().count() as i32);
    let h = TOP + n_layers * CELL_H + 40;
    (w as u32, h.max(TOP + 200) as u32)
}

fn legend(spec: &MapSpec) -> Vec<String> {
    let mut names = spec.order.clone();
    for layer in &spec.report.policies {
        for p in layer {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    names
}

fn colour(names: &[String], p: &str) -> RGBColor {
    let i = names.iter().position(|n| n == p).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &MapSpec,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let names = legend(spec);
    let r = spec.report;
    let n_kv = r.policies.first().map_or(0, |l| l.len()) as i32;
    let style = |sz: i32, h: HPos| {
        (FONT, sz)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(h, VPos::Center))
    };
    let label = |s: &str, x: i32, y: i32, sz: i32, h: HPos| -> std::result::Result<(), String> {
        if text {
            root.draw(&Text::new(s.to_string(), (x, y), style(sz, h)))
                .map_err(e)?;
        }
        Ok(())
    };
    label(&spec.title, 10, 16, 15, HPos::Left)?;
    label(
        &format!(
            "pruned {:.1}% of {} tokens x {} layers x {} KV heads; cell: policy colour, recovery on the prompt",
            100.0 * r.pruned_ratio,
            r.seq_len,
            r.policies.len(),
            n_kv
        ),
        10,
        36,
        12,
        HPos::Left,
    )?;
    for h in 0..n_kv {
        label(
            &format!("KV head {h}"),
            LEFT + h * CELL_W + CELL_W / 2,
            TOP - 10,
            12,
            HPos::Center,
        )?;
    }
    let bar_x = LEFT + n_kv * CELL_W + GAP;
    label("kept tokens", bar_x + BAR_W / 2, TOP - 10, 12, HPos::Center)?;
    for (l, layer) in r.policies.iter().enumerate() {
        let y = TOP + l as i32 * CELL_H;
        label(
            &format!("layer {l}"),
            LEFT - 6,
            y + CELL_H / 2,
            11,
            HPos::Right,
        )?;
        for (h, p) in layer.iter().enumerate() {
            let x = LEFT + h as i32 * CELL_W;
            root.draw(&Rectangle::new(
                [(x + 1, y + 1), (x + CELL_W - 1, y + CELL_H - 1)],
                colour(&names, p).filled(),
            ))
            .map_err(e)?;
            // A full head shows why: the best cheaper candidate's recovery, in brackets.
            let short = spec
                .shortfall
                .get(l)
                .and_then(|v| v.get(h))
                .copied()
                .flatten();
            let text = match (p.as_str(), short, r.head_recovery[l][h]) {
                // Rounded down, so that a shortfall never reads as T.
                ("full", Some(short), _) => Some(format!("({:.3})", (short * 1e3).floor() / 1e3)),
                (_, _, Some(rec)) => Some(format!("{rec:.3}")),
                _ => None,
            };
            if let Some(text) = text {
                label(&text, x + CELL_W / 2, y + CELL_H / 2, 11, HPos::Center)?;
            }
        }
        let kept = r.layer_kept.get(l).copied().unwrap_or(0.0).clamp(0.0, 1.0);
        root.draw(&Rectangle::new(
            [(bar_x, y + 3), (bar_x + BAR_W, y + CELL_H - 3)],
            RGBColor(230, 230, 230).filled(),
        ))
        .map_err(e)?;
        root.draw(&Rectangle::new(
            [
                (bar_x, y + 3),
                (bar_x + (kept * BAR_W as f64) as i32, y + CELL_H - 3),
            ],
            RGBColor(90, 90, 90).filled(),
        ))
        .map_err(e)?;
        label(
            &format!("{:.0}%", kept * 100.0),
            bar_x + BAR_W + 4,
            y + CELL_H / 2,
            11,
            HPos::Left,
        )?;
    }
    let lx = bar_x + BAR_W + GAP + 16;
    label("policy (heads)", lx, TOP - 10, 12, HPos::Left)?;
    for (i, name) in names.iter().enumerate() {
        let y = TOP + i as i32 * 22;
        let count: usize = r.policies.iter().flatten().filter(|p| *p == name).count();
        root.draw(&Rectangle::new(
            [(lx, y + 3), (lx + 16, y + 17)],
            colour(&names, name).filled(),
        ))
        .map_err(e)?;
        label(
            &format!("{name} ({count})"),
            lx + 22,
            y + 10,
            11,
            HPos::Left,
        )?;
    }
    let y = TOP + names.len() as i32 * 22 + 12;
    label(
        "(0.943) in a full cell: the recovery",
        lx,
        y,
        11,
        HPos::Left,
    )?;
    label("of the best cheaper candidate", lx, y + 14, 11, HPos::Left)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Writes the map as SVG at `svg` and PNG at `png`.
pub fn draw_policy_map(spec: &MapSpec, svg: &Path, png: &Path) -> Result<MapFiles> {
    let (w, h) = size(spec);
    let fail = |p: &Path, msg: String| Error::io(p, std::io::Error::other(msg));
    {
        let root = SVGBackend::new(svg, (w, h)).into_drawing_area();
        draw(&root, spec, true).map_err(|m| fail(svg, m))?;
    }
    let png_has_text = bitmap_font();
    {
        let root = BitMapBackend::new(png, (w, h)).into_drawing_area();
        draw(&root, spec, png_has_text).map_err(|m| fail(png, m))?;
    }
    Ok(MapFiles { png_has_text })
}
