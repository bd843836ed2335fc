//! A knowledge base's text side: documents split into chunks and ranked by BM25 for a query.
//! Pure and in memory: the store keeps documents; an index is rebuilt from them.
//!
//! Chunks follow the text's own structure — paragraphs (blank lines) and Markdown headings,
//! long paragraphs cut at sentence ends — up to [`ChunkOptions::max_chars`], each carrying
//! the heading it sits under, so a hit quoted back to a caller makes sense alone. Terms are
//! lowercased alphanumeric runs (any script), with English stop words dropped and English
//! inflections stripped; scoring is Okapi BM25 (k1 = 1.2, b = 0.75).

use std::collections::HashMap;

/// How documents are cut.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// Longest chunk, in characters (a sentence longer than this is cut at a word).
    pub max_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions { max_chars: 800 }
    }
}

/// A piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub document: String,
    /// Its place in the document, from 0.
    pub ordinal: usize,
    /// The Markdown heading it is under, if any.
    pub heading: Option<String>,
    pub text: String,
}

/// Splits `text` (plain or Markdown) into chunks.
pub fn chunk(document: &str, text: &str, opts: ChunkOptions) -> Vec<Chunk> {
    let max = opts.max_chars.max(40);
    let mut out: Vec<Chunk> = Vec::new();
    let mut heading: Option<String> = None;
    let mut current = String::new();
    let flush = |current: &mut String, heading: &Option<String>, out: &mut Vec<Chunk>| {
        let text = current.trim();
        if !text.is_empty() {
            out.push(Chunk {
                document: document.to_owned(),
                ordinal: out.len(),
                heading: heading.clone(),
                text: text.to_owned(),
            });
        }
        current.clear();
    };
    for paragraph in paragraphs(text) {
        if let Some(title) = paragraph.strip_prefix('#') {
            flush(&mut current, &heading, &mut out);
            heading = Some(title.trim_start_matches('#').trim().to_owned());
            continue;
        }
        for piece in pieces(&paragraph, max) {
            if !current.is_empty() && current.chars().count() + 1 + piece.chars().count() > max {
                flush(&mut current, &heading, &mut out);
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&piece);
        }
    }
    flush(&mut current, &heading, &mut out);
    out
}

/// Paragraphs: runs of non-blank lines joined by spaces; a heading line is its own.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            if !current.is_empty() {
                out.push(current.join(" "));
                current.clear();
            }
            if !line.is_empty() {
                out.push(line.to_owned());
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

/// A paragraph in pieces of at most `max` characters: whole sentences where they fit, else
/// words.
fn pieces(paragraph: &str, max: usize) -> Vec<String> {
    if paragraph.chars().count() <= max {
        return vec![paragraph.to_owned()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for word in paragraph.split_whitespace() {
        let fits = current.chars().count() + 1 + word.chars().count() <= max;
        // Past half the limit, a sentence end is where the piece ends.
        let sentence_end = current.chars().count() > max / 2 && current.ends_with(['.', '!', '?']);
        if !current.is_empty() && (!fits || sentence_end) {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in",
    "is", "it", "me", "my", "of", "on", "or", "our", "the", "to", "we", "what", "when", "where",
    "which", "who", "with", "you", "your",
];

/// The terms of `text`: lowercased alphanumeric runs, stop words dropped, English words
/// stemmed lightly ([`stem`]).
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .filter(|t| !STOP_WORDS.contains(&t.as_str()))
        .map(stem)
        .collect()
}

/// English inflections stripped, so "parking", "parks" and "park" meet: `-ies` → `-y`,
/// `-ing`, `-ed`, `-es` after s/x/z/h, `-s` (not `-ss`), twice at most ("buildings" →
/// "build"). Words with non-ASCII letters, or short ones, are left alone.
pub fn stem(word: String) -> String {
    if !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return word;
    }
    let mut w = word;
    for _ in 0..2 {
        let n = w.len();
        let cut = if n > 4 && w.ends_with("ies") {
            w.truncate(n - 3);
            w.push('y');
            true
        } else if n > 5 && w.ends_with("ing") {
            w.truncate(n - 3);
            true
        } else if n > 4
            && (w.ends_with("ed")
                || (w.ends_with("es") && w[..n - 2].ends_with(['s', 'x', 'z', 'h'])))
        {
            w.truncate(n - 2);
            true
        } else if n > 3 && w.ends_with('s') && !w.ends_with("ss") {
            w.truncate(n - 1);
            true
        } else {
            false
        };
        if !cut {
            break;
        }
    }
    w
}

/// Chunks indexed for BM25.
#[derive(Debug, Default)]
pub struct Index {
    chunks: Vec<Chunk>,
    /// Each chunk's length in terms.
    lengths: Vec<usize>,
    /// term → (chunk, occurrences).
    postings: HashMap<String, Vec<(usize, u32)>>,
}

/// A chunk that matched, and how well.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<'a> {
    pub chunk: &'a Chunk,
    pub score: f64,
}

const K1: f64 = 1.2;
const B: f64 = 0.75;

impl Index {
    pub fn add(&mut self, chunk: Chunk) {
        let id = self.chunks.len();
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut n = 0;
        for term in
            terms(&chunk.text).into_iter().chain(chunk.heading.iter().flat_map(|h| terms(h)))
        {
            *counts.entry(term).or_default() += 1;
            n += 1;
        }
        for (term, count) in counts {
            self.postings.entry(term).or_default().push((id, count));
        }
        self.lengths.push(n);
        self.chunks.push(chunk);
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The `k` best chunks for `query`, best first (ties: earlier chunks first); none when no
    /// term of the query occurs.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit<'_>> {
        let n = self.chunks.len() as f64;
        if n == 0.0 {
            return Vec::new();
        }
        let avg = self.lengths.iter().sum::<usize>() as f64 / n;
        let mut scores: HashMap<usize, f64> = HashMap::new();
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        for term in &query_terms {
            let Some(postings) = self.postings.get(term) else { continue };
            let df = postings.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(id, tf) in postings {
                let tf = f64::from(tf);
                let len = self.lengths[id] as f64;
                let norm = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg.max(1.0)));
                *scores.entry(id).or_default() += idf * norm;
            }
        }
        let mut hits: Vec<(usize, f64)> = scores.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.into_iter().take(k).map(|(id, score)| Hit { chunk: &self.chunks[id], score }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAQ: &str = "# Opening hours\n\nWe are open Monday to Friday, 9:00 to 17:00.\nOn Saturdays \
        we open at 10:00.\n\n# Prices\n\nA consultation costs 40 euros. Children under 12 pay half.\n\n\
        # Parking\n\nThe car park behind the building is free for patients.\n";

    fn index(docs: &[(&str, &str)]) -> Index {
        let mut index = Index::default();
        for (name, text) in docs {
            for c in chunk(name, text, ChunkOptions::default()) {
                index.add(c);
            }
        }
        index
    }

    #[test]
    fn chunks_follow_headings_and_paragraphs_and_carry_their_heading() {
        let chunks = chunk("faq.md", FAQ, ChunkOptions::default());
        let headings: Vec<_> = chunks.iter().map(|c| c.heading.as_deref().unwrap()).collect();
        assert_eq!(headings, ["Opening hours", "Prices", "Parking"]);
        assert_eq!(
            chunks[0].text,
            "We are open Monday to Friday, 9:00 to 17:00. On Saturdays we open at 10:00."
        );
        assert_eq!(chunks.iter().map(|c| c.ordinal).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_long_paragraph_is_cut_at_sentences_within_the_limit() {
        let sentence = "The clinic offers physiotherapy for back pain and sports injuries. ";
        let text = sentence.repeat(30);
        let chunks = chunk("long.txt", &text, ChunkOptions { max_chars: 200 });
        assert!(chunks.len() >= 10, "{}", chunks.len());
        for c in &chunks {
            assert!(c.text.chars().count() <= 200, "{} chars", c.text.len());
            assert!(c.text.ends_with('.'), "cut mid-sentence: {:?}", c.text);
        }
        // Nothing lost: the words come back in order.
        let words: Vec<&str> = chunks.iter().flat_map(|c| c.text.split_whitespace()).collect();
        assert_eq!(words, text.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn bm25_ranks_the_chunk_that_answers_the_question_first() {
        let index =
            index(&[("faq.md", FAQ), ("news.md", "# News\n\nWe opened a second car park in May.")]);
        let hits = index.search("How much does a consultation cost?", 3);
        assert_eq!(hits[0].chunk.heading.as_deref(), Some("Prices"), "{hits:?}");
        let hits = index.search("when are you open on saturday", 3);
        assert_eq!(hits[0].chunk.heading.as_deref(), Some("Opening hours"), "{hits:?}");
        let hits = index.search("car park", 3);
        assert_eq!(hits.len(), 2);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        // Only stop words, or words nowhere: nothing.
        assert!(index.search("what is the", 3).is_empty());
        assert!(index.search("helicopter", 3).is_empty());
        assert!(Index::default().search("prices", 3).is_empty());
    }

    #[test]
    fn terms_are_any_script_lowercased() {
        assert_eq!(terms("Ärzte & Öffnungszeiten: MONTAG"), ["ärzte", "öffnungszeiten", "montag"]);
        assert_eq!(terms("Call +1 (212) 555-0100"), ["call", "1", "212", "555", "0100"]);
    }

    #[test]
    fn inflections_meet_at_one_stem() {
        for (a, b) in [
            ("parking", "park"),
            ("parks", "park"),
            ("buildings", "building"),
            ("prices", "price"),
            ("boxes", "box"),
            ("studies", "study"),
            ("opened", "open"),
        ] {
            assert_eq!(stem(a.into()), stem(b.into()), "{a} / {b}");
        }
        assert_eq!(stem("class".into()), "class");
        assert_eq!(stem("bus".into()), "bus");
    }
}
