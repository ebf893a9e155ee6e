//! `fastgen tokenize`: text to token ids, as the model's tokenizer sees it (BOS first when the
//! model asks for it, like `llama-tokenize`). Reads only the tokenizer, not the weights.

use super::ModelArgs;
use anyhow::Result;
use clap::Args;

/// Largest `--file`: tokenizing takes about a hundred times the text's size in memory.
const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to tokenize.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// Read the text from a file.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Print a JSON array of ids instead of one line per token with its text.
    #[arg(long)]
    json: bool,
    /// Do not put BOS in front even if the model asks for it (llama-tokenize's --no-bos).
    #[arg(long)]
    no_bos: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => super::read_bounded(f, MAX_TEXT_FILE_BYTES, "text file")?,
        (None, None) => anyhow::bail!("give --text or --file"),
    };
    let tokenizer = a.model.load_tokenizer()?;
    let ids = if a.no_bos {
        tokenizer.encode(&text)?
    } else {
        tokenizer.encode_prompt(&text)?
    };
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in &ids {
            println!("{id:>7} {:?}", tokenizer.decode(&[*id]));
        }
    }
    Ok(())
}
