//! `vox kb`: the tenant's knowledge base — documents its flows answer from, and search.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::remote::{Client, cell};

#[derive(Debug, Subcommand)]
pub enum KbAction {
    /// Add a document (plain text or Markdown), or replace the one of that name.
    Add {
        file: PathBuf,
        /// The document's name (default: the file name without its extension, lowercased).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the documents.
    Ls,
    /// The chunks that best answer QUERY, best first.
    Search {
        query: String,
        /// How many (at most 50).
        #[arg(short, default_value_t = 5)]
        k: usize,
    },
    /// Remove a document.
    Rm { name: String },
}

fn default_name(file: &std::path::Path) -> Option<String> {
    let stem = file.file_stem()?.to_string_lossy().to_lowercase();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .collect();
    (!name.is_empty()).then_some(name)
}

pub async fn kb(client: &Client, action: KbAction) -> anyhow::Result<()> {
    match action {
        KbAction::Add { file, name } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {} (a UTF-8 text file)", file.display()))?;
            let name = name
                .or_else(|| default_name(&file))
                .context("cannot name the document after its file: pass --name")?;
            let request = client
                .http
                .put(client.url(&format!("/kb/documents/{name}")))
                .header(reqwest::header::CONTENT_TYPE, "text/markdown")
                .body(text);
            let doc = client.send(request).await?;
            if client.json {
                println!("{doc}");
            } else {
                println!("document {name}: {} characters", cell(doc.get("size")));
            }
        }
        KbAction::Ls => client.print(
            &client.get("/kb/documents").await?,
            &[("/name", "NAME"), ("/size", "CHARACTERS"), ("/updated_at", "UPDATED")],
        ),
        KbAction::Search { query, k } => {
            let mut url = reqwest::Url::parse("http://x/kb/search").context("url")?;
            url.query_pairs_mut().append_pair("q", &query).append_pair("k", &k.to_string());
            let path = format!("/kb/search?{}", url.query().unwrap_or_default());
            let hits = client.get(&path).await?;
            if client.json {
                println!("{hits}");
            } else {
                for h in hits.as_array().into_iter().flatten() {
                    let heading =
                        h["heading"].as_str().map(|s| format!(" › {s}")).unwrap_or_default();
                    println!(
                        "{} {}{heading}  ({})",
                        cell(h.get("score")),
                        cell(h.get("document")),
                        cell(h.get("chunk"))
                    );
                    println!("    {}", cell(h.get("text")));
                }
            }
        }
        KbAction::Rm { name } => {
            client.delete(&format!("/kb/documents/{name}")).await?;
            if !client.json {
                println!("removed {name}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_named_after_their_file() {
        assert_eq!(
            default_name(std::path::Path::new("docs/Opening Hours.md")).as_deref(),
            Some("opening-hours")
        );
    }
}
