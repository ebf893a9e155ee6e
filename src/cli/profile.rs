//! `fastgen profile`: run a prompt through prefill with FastGen profiling, print each layer's
//! policy histogram, and draw the layer x KV-head policy map (SVG and PNG).

use super::{KvArgs, ModelArgs, PromptArgs};
use anyhow::{Context, Result};
use clap::Args;
use fastgen::compress::plot::{draw_policy_map, MapSpec};
use fastgen::model::Workspace;
use std::path::PathBuf;

#[derive(Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// The policy map as SVG; a PNG is written beside it (same name, .png).
    #[arg(long, default_value = "policy-map.svg")]
    out: PathBuf,
    /// Also write the KV accounting as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: ProfileArgs) -> Result<()> {
    let mut settings = a.kv.settings()?;
    let loaded = a.model.load()?;
    let ids = a.prompt.ids(&loaded)?;
    // `profile` shows what the heads choose on this prompt: FastGen's deferral (which keeps
    // short sequences full) would leave nothing to show.
    if settings.compress_at(ids.len()) > ids.len() {
        eprintln!(
            "note: policies chosen on the {}-token prompt; run and serve keep the cache full until {} tokens (--compress-from)",
            ids.len(),
            settings.fastgen.compress_from
        );
        settings.fastgen.compress_from = 0;
    }
    let order = settings.policy_order();
    let label = settings.label();
    let mut cache = a.kv.new_cache(&loaded, settings)?;
    let mut ws = Workspace::default();
    cache.prefill(&loaded.model, &mut ws, &ids)?;
    let report = cache.report();
    println!("{} prompt tokens; {}", ids.len(), report.summary());
    for line in report.histogram_lines() {
        println!("{line}");
    }
    let name = loaded
        .model
        .path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let shortfall = cache.head_shortfalls();
    let spec = MapSpec {
        report: &report,
        title: format!("{name}: {label}, {} prompt tokens", ids.len()),
        order,
        shortfall: shortfall.clone(),
    };
    let png = a.out.with_extension("png");
    let files = draw_policy_map(&spec, &a.out, &png)?;
    println!(
        "wrote {} and {}{}",
        a.out.display(),
        png.display(),
        if files.png_has_text {
            ""
        } else {
            " (no TrueType font found: the PNG has no text)"
        }
    );
    if let Some(path) = &a.json {
        let mut doc = report.to_json();
        doc["head_shortfall"] = serde_json::json!(shortfall);
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
