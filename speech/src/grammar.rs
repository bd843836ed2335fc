//! Phrase hints → a JSGF grammar, so recognition chooses among the phrases a flow expects.
//!
//! A hint is a phrase in a small subset of JSGF: words, `[optional words]`, `(one | other)`
//! and two built-in rules, `<digit>` (zero/oh/one … nine) and `<digits>` (one or more).
//! For example `["yes", "no", "[my name is] (alice | bob)", "<digits>"]`.

/// Why hints are not a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    #[error("no hints given")]
    Empty,
    #[error("hint {hint:?}: {why}")]
    Syntax { hint: String, why: String },
    #[error("words not in the speech dictionary: {0}")]
    UnknownWords(String),
}

/// The built-in rules a hint may use.
const RULES: &str = "<digit> = zero | oh | one | two | three | four | five | six | seven | eight \
                     | nine;\n<digits> = <digit>+;\n";

/// A validated set of phrase hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    phrases: Vec<String>,
}

impl Grammar {
    /// Validates `hints` (case-insensitive; extra spaces ignored).
    pub fn from_hints<S: AsRef<str>>(hints: &[S]) -> Result<Grammar, GrammarError> {
        let mut phrases = Vec::new();
        for hint in hints {
            let hint = hint.as_ref();
            let phrase = normalise(hint).map_err(|why| GrammarError::Syntax {
                hint: hint.to_owned(),
                why: why.to_owned(),
            })?;
            if !phrase.is_empty() {
                phrases.push(phrase);
            }
        }
        if phrases.is_empty() {
            return Err(GrammarError::Empty);
        }
        Ok(Grammar { phrases })
    }

    /// The literal words the phrases use (built-in rules' words not included).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.phrases.iter().flat_map(|p| {
            p.split(|c: char| " []()|".contains(c)).filter(|w| !w.is_empty() && !w.starts_with('<'))
        })
    }

    /// The grammar in JSGF, for the engine.
    pub fn jsgf(&self) -> String {
        let alternatives: Vec<String> = self.phrases.iter().map(|p| format!("( {p} )")).collect();
        format!(
            "#JSGF V1.0;\ngrammar hints;\n{RULES}public <hint> = {};\n",
            alternatives.join(" | ")
        )
    }
}

/// Lower-cases and tokenises one hint, checking its brackets and rule names.
fn normalise(hint: &str) -> Result<String, &'static str> {
    let mut tokens: Vec<String> = Vec::new();
    let mut stack = Vec::new();
    let mut word = String::new();
    let lower = hint.to_lowercase();
    let mut chars = lower.chars().peekable();
    let flush = |word: &mut String, tokens: &mut Vec<String>| {
        if !word.is_empty() {
            tokens.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            'a'..='z' | '\'' => word.push(c),
            ' ' | '\t' | ',' => flush(&mut word, &mut tokens),
            '[' | '(' => {
                flush(&mut word, &mut tokens);
                stack.push(if c == '[' { ']' } else { ')' });
                tokens.push(c.to_string());
            }
            ']' | ')' => {
                flush(&mut word, &mut tokens);
                if stack.pop() != Some(c) {
                    return Err("unbalanced brackets");
                }
                tokens.push(c.to_string());
            }
            '|' => {
                flush(&mut word, &mut tokens);
                tokens.push("|".into());
            }
            '<' => {
                flush(&mut word, &mut tokens);
                let mut name = String::new();
                for n in chars.by_ref() {
                    if n == '>' {
                        break;
                    }
                    name.push(n);
                }
                if name != "digit" && name != "digits" {
                    return Err("the only rules are <digit> and <digits>");
                }
                tokens.push(format!("<{name}>"));
            }
            _ => {
                return Err(
                    "only letters, apostrophes, spaces, [ ], ( | ) and <digits> are allowed",
                );
            }
        }
    }
    flush(&mut word, &mut tokens);
    if !stack.is_empty() {
        return Err("unbalanced brackets");
    }
    Ok(tokens.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_become_alternatives_with_builtin_rules() {
        let g =
            Grammar::from_hints(&["Yes", "no  thanks", "[my name is] (Alice | bob)", "<digits>"])
                .expect("valid");
        let jsgf = g.jsgf();
        assert!(jsgf.contains(
            "public <hint> = ( yes ) | ( no thanks ) | ( [ my name is ] ( alice | bob ) ) | \
             ( <digits> );"
        ));
        assert!(jsgf.contains("<digits> = <digit>+;"));
        let words: Vec<&str> = g.words().collect();
        assert_eq!(words, ["yes", "no", "thanks", "my", "name", "is", "alice", "bob"]);
    }

    #[test]
    fn bad_hints_say_what_is_wrong() {
        assert_eq!(Grammar::from_hints::<&str>(&[]), Err(GrammarError::Empty));
        assert_eq!(Grammar::from_hints(&["  "]), Err(GrammarError::Empty));
        for (hint, why) in [
            ("(yes", "unbalanced"),
            ("yes]", "unbalanced"),
            ("<name>", "the only rules are"),
            ("yes; public <x> = no", "only letters, apostrophes"),
            ("42", "only letters, apostrophes"),
        ] {
            match Grammar::from_hints(&[hint]) {
                Err(GrammarError::Syntax { why: w, .. }) => {
                    assert!(w.contains(why), "{hint}: {w}")
                }
                other => panic!("{hint}: {other:?}"),
            }
        }
    }
}
