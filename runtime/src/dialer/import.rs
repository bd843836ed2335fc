//! Lead lists from CSV: every bad row rejected with its line number and reason, every good row
//! kept. Pure: bytes in, leads and rejections out (the store writes them).
//!
//! The first line is the header. A `number` column is required (also accepted: `phone`,
//! `phone_number`, `e164`); `tz`, `state` and `postcode` are the lead's place; every other
//! column becomes a call variable of the lead. Numbers are E.164 (`+` and 8–15 digits;
//! spaces, dashes, dots and parentheses are dropped). Fields follow RFC 4180 quoting within a
//! line.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One good row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadRow {
    pub line: usize,
    /// E.164 with the `+`.
    pub number: String,
    pub tz: Option<String>,
    pub state: Option<String>,
    pub postcode: Option<String>,
    pub vars: BTreeMap<String, String>,
}

/// One bad row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

/// What an import found.
#[derive(Debug, Clone, Default)]
pub struct Import {
    pub leads: Vec<LeadRow>,
    /// The first [`MAX_REJECTIONS_LISTED`] bad rows; `rejected_total` counts all of them.
    pub rejected: Vec<Rejected>,
    pub rejected_total: usize,
}

/// Rejections listed by line; more are only counted.
pub const MAX_REJECTIONS_LISTED: usize = 1000;

/// Why a whole file was refused (nothing imported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {size} bytes; at most {limit} are accepted per upload")]
    TooLarge { size: usize, limit: usize },
    #[error("line 1 (the header) has no number column (found: {found}); name it `number`")]
    NoNumberColumn { found: String },
    #[error("line 1 (the header) names column {0:?} twice")]
    DuplicateColumn(String),
    #[error(
        "line 1 (the header): column {0:?} is not a valid variable name (letters, digits, _ and -)"
    )]
    BadColumn(String),
}

const NUMBER_NAMES: [&str; 4] = ["number", "phone", "phone_number", "e164"];

/// Parses a CSV lead list of at most `max_bytes`.
pub fn parse_csv(bytes: &[u8], max_bytes: usize) -> Result<Import, ImportError> {
    if bytes.len() > max_bytes {
        return Err(ImportError::TooLarge { size: bytes.len(), limit: max_bytes });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)));
    let header = loop {
        match lines.next() {
            None => return Err(ImportError::Empty),
            Some((_, l)) if l.iter().all(u8::is_ascii_whitespace) => continue,
            Some((_, l)) => break l,
        }
    };
    let header = std::str::from_utf8(header)
        .map_err(|_| ImportError::NoNumberColumn { found: "(not UTF-8 text)".into() })?;
    let columns: Vec<String> = fields(header)
        .map_err(|_| ImportError::NoNumberColumn { found: header.chars().take(80).collect() })?
        .into_iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let mut seen = HashSet::new();
    for c in &columns {
        if !seen.insert(c.as_str()) {
            return Err(ImportError::DuplicateColumn(c.clone()));
        }
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            return Err(ImportError::BadColumn(c.clone()));
        }
    }
    let Some(number_col) = columns.iter().position(|c| NUMBER_NAMES.contains(&c.as_str())) else {
        return Err(ImportError::NoNumberColumn { found: columns.join(", ") });
    };
    let mut import = Import::default();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let reject = |import: &mut Import, line, reason: String| {
        import.rejected_total += 1;
        if import.rejected.len() < MAX_REJECTIONS_LISTED {
            import.rejected.push(Rejected { line, reason });
        }
    };
    for (line, raw) in lines {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            reject(&mut import, line, "not UTF-8 text".into());
            continue;
        };
        let values = match fields(text) {
            Ok(v) => v,
            Err(e) => {
                reject(&mut import, line, e.into());
                continue;
            }
        };
        if values.len() != columns.len() {
            reject(
                &mut import,
                line,
                format!("{} fields, the header has {}", values.len(), columns.len()),
            );
            continue;
        }
        let number = match e164(&values[number_col]) {
            Ok(n) => n,
            Err(why) => {
                reject(&mut import, line, why);
                continue;
            }
        };
        if let Some(first) = first_line.get(&number) {
            reject(&mut import, line, format!("duplicate of line {first} ({number})"));
            continue;
        }
        let mut row = LeadRow {
            line,
            number: number.clone(),
            tz: None,
            state: None,
            postcode: None,
            vars: BTreeMap::new(),
        };
        let mut bad = None;
        for (i, (col, value)) in columns.iter().zip(values).enumerate() {
            let value = value.trim().to_owned();
            if i == number_col || value.is_empty() {
                continue;
            }
            match col.as_str() {
                "tz" => {
                    if jiff::tz::TimeZone::get(&value).is_err() {
                        bad = Some(format!(
                            "unknown time zone {value:?} (use an IANA name such as America/Chicago)"
                        ));
                    }
                    row.tz = Some(value);
                }
                "state" => row.state = Some(value.to_ascii_uppercase()),
                "postcode" => row.postcode = Some(value),
                _ => {
                    row.vars.insert(col.clone(), value);
                }
            }
        }
        if let Some(why) = bad {
            reject(&mut import, line, why);
            continue;
        }
        first_line.insert(number, line);
        import.leads.push(row);
    }
    Ok(import)
}

/// A number in E.164, or why it is not one.
pub fn e164(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let cleaned: String =
        trimmed.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let shown: String = trimmed.chars().take(40).collect();
    let Some(digits) = cleaned.strip_prefix('+') else {
        return Err(if cleaned.is_empty() {
            "no number".into()
        } else {
            format!("{shown:?} is not E.164 (start with + and the country code)")
        });
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{shown:?} has characters other than digits"));
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(format!("{shown:?} is not E.164 (+, a country code, 8–15 digits in all)"));
    }
    Ok(cleaned)
}

/// The fields of one CSV line (RFC 4180 quoting; a quoted field may not span lines).
fn fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            (false, '"') => return Err("a quote inside an unquoted field"),
            (false, ',') => {
                out.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a closing quote");
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quote");
    }
    out.push(field);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    #[test]
    fn good_rows_are_kept_and_bad_ones_rejected_with_their_line_and_reason() {
        let csv = "number,tz,state,first_name\n\
                   +1 (212) 555-0100,,NY,Ada\n\
                   2125550101,,,Bob\n\
                   +12125550100,,,Dup\n\
                   +44 20 7946 0000,Europe/London,,\"Smith, Jr\"\n\
                   +1212555abcd,,,X\n\
                   +13055550100,Mars/Base,,Y\n\
                   +13055550101,,FL\n\
                   \"+13055550102,,,Z\n\
                   \n\
                   +33142685300,,,\"say \"\"hi\"\"\"\n";
        let import = parse_csv(csv.as_bytes(), MB).expect("parses");
        let kept: Vec<(usize, &str)> =
            import.leads.iter().map(|l| (l.line, l.number.as_str())).collect();
        assert_eq!(kept, [(2, "+12125550100"), (5, "+442079460000"), (11, "+33142685300")]);
        assert_eq!(import.leads[0].state.as_deref(), Some("NY"));
        assert_eq!(import.leads[1].vars["first_name"], "Smith, Jr");
        assert_eq!(import.leads[2].vars["first_name"], "say \"hi\"");
        let rejected: Vec<(usize, &str)> =
            import.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(rejected.len(), 6, "{rejected:#?}");
        assert!(rejected[0].0 == 3 && rejected[0].1.contains("not E.164"), "{rejected:?}");
        assert_eq!(rejected[1], (4, "duplicate of line 2 (+12125550100)"));
        assert!(rejected[2].0 == 6 && rejected[2].1.contains("other than digits"));
        assert!(rejected[3].0 == 7 && rejected[3].1.contains("unknown time zone"));
        assert_eq!(rejected[4], (8, "3 fields, the header has 4"));
        assert_eq!(rejected[5], (9, "an unterminated quote"));
    }

    #[test]
    fn a_file_without_a_number_column_is_refused_whole() {
        let err = parse_csv(b"name,email\nAda,ada@example.com\n", MB).unwrap_err();
        assert_eq!(err, ImportError::NoNumberColumn { found: "name, email".into() });
        assert!(err.to_string().contains("name it `number`"));
        assert_eq!(
            parse_csv(b"number,Number\n", MB).unwrap_err(),
            ImportError::DuplicateColumn("number".into())
        );
        assert_eq!(parse_csv(b"", MB).unwrap_err(), ImportError::Empty);
        assert!(matches!(
            parse_csv(&[b'x'; 100], 10),
            Err(ImportError::TooLarge { size: 100, limit: 10 })
        ));
    }

    #[test]
    fn ten_megabytes_of_junk_are_rows_rejected_not_a_crash() {
        let mut junk = b"phone\n+12125550100\n".to_vec();
        let mut x: u32 = 1;
        while junk.len() < 10 * MB {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            junk.push((x % 256) as u8);
        }
        let import = parse_csv(&junk, 16 * MB).expect("parses");
        assert_eq!(import.leads.len(), 1, "the one good row is kept");
        assert!(import.rejected_total > 10_000, "{}", import.rejected_total);
        assert_eq!(import.rejected.len(), MAX_REJECTIONS_LISTED);
        assert!(import.rejected.iter().all(|r| r.line >= 3 && !r.reason.is_empty()));
    }
}
