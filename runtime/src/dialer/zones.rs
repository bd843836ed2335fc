//! Where a lead is, in time: the IANA zones its calling window is checked in.
//!
//! Sources, best first: the lead's own `tz` (an IANA name the operator supplied) is used
//! alone. Otherwise, for NANP numbers (+1), the lead's `state` and the area code's state
//! (from libphonenumber's geocoding data) give a set of states, whose zones are unioned with
//! the zones libphonenumber maps the number's longest prefix to. When a source names several
//! zones (Texas, a prefix shared by two zones, sources that disagree), the window must hold
//! in every one of them: the strictest. No source at all means the lead is not dialled.

use std::collections::HashMap;
use std::sync::OnceLock;

use jiff::tz::TimeZone;

/// Where the zones came from, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The lead's `tz` field.
    Lead,
    /// The lead's `state` field (and the number's prefix, if it adds zones).
    State,
    /// The number's prefix only.
    Prefix,
}

impl ZoneSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneSource::Lead => "lead-tz",
            ZoneSource::State => "lead-state",
            ZoneSource::Prefix => "number-prefix",
        }
    }
}

/// A lead's zones.
#[derive(Debug, Clone)]
pub struct Zones {
    pub zones: Vec<(String, TimeZone)>,
    pub source: ZoneSource,
    /// US states / Canadian provinces the lead is presumed in (its own field, else its area
    /// code), for state rules such as Florida's shorter window.
    pub states: Vec<String>,
}

impl Zones {
    pub fn names(&self) -> String {
        self.zones.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// Why no zone could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("unknown time zone {0:?} (use an IANA name such as America/New_York)")]
    UnknownTz(String),
    #[error("no time zone known for {0} (give the lead a tz or state)")]
    Unknown(String),
}

/// What a lead says about where it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place<'a> {
    /// E.164, with or without the `+`.
    pub number: &'a str,
    pub tz: Option<&'a str>,
    pub state: Option<&'a str>,
}

/// Resolves `place` to the zones its window is checked in.
pub fn resolve(place: Place<'_>) -> Result<Zones, ZoneError> {
    let digits = place.number.trim_start_matches('+');
    let nanp = digits.starts_with('1') && digits.len() == 11;
    let area_states = if nanp { area_code_states(&digits[1..4]) } else { Vec::new() };
    if let Some(name) = place.tz.map(str::trim).filter(|t| !t.is_empty()) {
        let tz = TimeZone::get(name).map_err(|_| ZoneError::UnknownTz(name.to_owned()))?;
        let states = state_field(place).map(|s| vec![s]).unwrap_or(area_states);
        return Ok(Zones { zones: vec![(name.to_owned(), tz)], source: ZoneSource::Lead, states });
    }
    let mut names: Vec<&'static str> = Vec::new();
    let mut source = ZoneSource::Prefix;
    let mut states = area_states;
    if nanp
        && let Some(state) = state_field(place)
        && let Some(zones) = state_zones(&state)
    {
        names.extend(zones);
        source = ZoneSource::State;
        states = vec![state];
    }
    if let Some(zones) = prefix_zones(digits) {
        // A prefix that only says "somewhere in the country" adds nothing to a state.
        if source == ZoneSource::Prefix || zones.len() <= 4 {
            names.extend(zones.iter().copied());
        }
    }
    names.sort_unstable();
    names.dedup();
    let zones: Vec<(String, TimeZone)> = names
        .into_iter()
        .filter_map(|n| TimeZone::get(n).ok().map(|tz| (n.to_owned(), tz)))
        .collect();
    if zones.is_empty() {
        return Err(ZoneError::Unknown(place.number.to_owned()));
    }
    Ok(Zones { zones, source, states })
}

fn state_field(place: Place<'_>) -> Option<String> {
    place.state.map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty())
}

/// The zones of libphonenumber's longest prefix of `digits`.
fn prefix_zones(digits: &str) -> Option<&'static [&'static str]> {
    static TABLE: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| parse(include_str!("data/prefix-zones.tsv")));
    (1..=digits.len().min(10)).rev().find_map(|n| table.get(&digits[..n])).map(Vec::as_slice)
}

fn area_code_states(npa: &str) -> Vec<String> {
    static TABLE: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| parse(include_str!("data/nanp-states.tsv")));
    table.get(npa).map(|s| s.iter().map(|s| (*s).to_owned()).collect()).unwrap_or_default()
}

fn parse(data: &'static str) -> HashMap<&'static str, Vec<&'static str>> {
    data.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k, v.split(' ').collect()))
        .collect()
}

/// The zones of a US state, DC, a US territory or a Canadian province (its two-letter code).
fn state_zones(code: &str) -> Option<Vec<&'static str>> {
    const NY: &str = "America/New_York";
    const CHI: &str = "America/Chicago";
    const DEN: &str = "America/Denver";
    const LA: &str = "America/Los_Angeles";
    let zones: &[&str] = match code {
        "CT" | "DE" | "DC" | "GA" | "ME" | "MD" | "MA" | "NH" | "NJ" | "NY" | "NC" | "OH"
        | "PA" | "RI" | "SC" | "VT" | "VA" | "WV" => &[NY],
        "AL" | "AR" | "IL" | "IA" | "LA" | "MN" | "MS" | "MO" | "OK" | "WI" => &[CHI],
        "CO" | "MT" | "NM" | "UT" | "WY" => &[DEN],
        "CA" | "NV" | "WA" => &[LA],
        "AK" => &["America/Anchorage", "America/Adak"],
        "AZ" => &["America/Phoenix", DEN],
        "FL" | "TN" | "KY" => &[NY, CHI],
        "IN" => &["America/Indiana/Indianapolis", CHI],
        "MI" => &["America/Detroit", CHI],
        "KS" | "NE" | "ND" | "SD" | "TX" => &[CHI, DEN],
        "ID" => &["America/Boise", LA],
        "OR" => &[LA, "America/Boise"],
        "HI" => &["Pacific/Honolulu"],
        "PR" => &["America/Puerto_Rico"],
        "VI" => &["America/St_Thomas"],
        "GU" => &["Pacific/Guam"],
        "AS" => &["Pacific/Pago_Pago"],
        "MP" => &["Pacific/Saipan"],
        "AB" => &["America/Edmonton"],
        "BC" => &["America/Vancouver", "America/Edmonton"],
        "MB" => &["America/Winnipeg"],
        "NB" => &["America/Moncton"],
        "NL" => &["America/St_Johns", "America/Goose_Bay"],
        "NS" | "PE" => &["America/Halifax"],
        "NT" => &["America/Edmonton"],
        "NU" => &["America/Iqaluit", "America/Rankin_Inlet", "America/Cambridge_Bay"],
        "ON" => &["America/Toronto", "America/Winnipeg"],
        "QC" => &["America/Toronto", "America/Halifax"],
        "SK" => &["America/Regina", "America/Edmonton"],
        "YT" => &["America/Whitehorse"],
        _ => return None,
    };
    Some(zones.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(place: Place<'_>) -> (String, ZoneSource) {
        let z = resolve(place).expect("resolves");
        (z.names(), z.source)
    }

    #[test]
    fn the_leads_own_zone_wins() {
        let place = Place { number: "+12125550100", tz: Some("America/Denver"), state: None };
        assert_eq!(names(place), ("America/Denver".into(), ZoneSource::Lead));
        let bad = Place { tz: Some("Mars/Olympus"), ..place };
        assert_eq!(resolve(bad).unwrap_err(), ZoneError::UnknownTz("Mars/Olympus".into()));
    }

    #[test]
    fn prefixes_give_zones_and_area_codes_give_states() {
        let z = resolve(Place { number: "+12125550100", ..Place::default() }).unwrap();
        assert_eq!((z.names().as_str(), z.source), ("America/New_York", ZoneSource::Prefix));
        assert_eq!(z.states, ["NY"]);
        assert_eq!(names(Place { number: "+442079460000", ..Place::default() }).0, "Europe/London");
        assert_eq!(names(Place { number: "33142685300", ..Place::default() }).0, "Europe/Paris");
        let fl = resolve(Place { number: "+13055550100", ..Place::default() }).unwrap();
        assert_eq!(fl.states, ["FL"]);
    }

    #[test]
    fn a_state_spanning_zones_keeps_all_of_them() {
        let tx = Place { number: "+12145550100", tz: None, state: Some("tx") };
        let (zones, source) = names(tx);
        assert_eq!(source, ZoneSource::State);
        assert!(zones.contains("America/Chicago") && zones.contains("America/Denver"), "{zones}");
    }

    #[test]
    fn sources_that_disagree_are_all_checked() {
        // A Manhattan number whose lead says California: both zones, the strictest window.
        let moved = Place { number: "+12125550100", tz: None, state: Some("CA") };
        assert_eq!(names(moved).0, "America/Los_Angeles America/New_York");
    }

    #[test]
    fn no_source_means_unknown() {
        assert!(matches!(
            resolve(Place { number: "+999123", ..Place::default() }),
            Err(ZoneError::Unknown(_))
        ));
    }
}
