//! The offline recognizer on telephone audio: utterances synthesised by espeak-ng, taken to
//! 8 kHz and through G.711 μ-law as a call would carry them, recognised with the hints an IVR
//! would give. Prints the word error rate (the issue asks for it to be reported).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use voxide_media::{g711, resample, wav};
use voxide_speech::{Grammar, Model, Recognizer, word_errors};

/// espeak-ng's voice for `text`, as a caller's phone would send it: 8 kHz, μ-law.
fn telephone(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("said.wav");
    let status =
        Command::new("espeak-ng").args(["-v", "en-us", "-w"]).arg(&file).arg(text).status();
    assert!(status.expect("espeak-ng is installed (scripts/test.sh installs it)").success());
    let audio = wav::read_wav(&std::fs::read(&file).unwrap()).unwrap();
    let pcm = resample::resample(&audio.samples, audio.sample_rate, 8000).unwrap();
    // A caller pauses before and after speaking: 300 ms of line noise either side.
    let mut line = vec![0i16; 2400];
    line.extend(pcm);
    line.extend([0i16; 2400]);
    line.iter()
        .enumerate()
        .map(|(i, &s)| g711::ulaw_decode(g711::ulaw_encode(s.saturating_add(noise(i)))))
        .collect()
}

/// Low line noise (about -60 dBFS), deterministic.
fn noise(i: usize) -> i16 {
    ((i.wrapping_mul(2_654_435_761) >> 7) % 65) as i16 - 32
}

fn model() -> Option<Model> {
    let model = Model::debian_en_us();
    if model.installed() {
        Some(model)
    } else if std::env::var_os("CI").is_some() {
        panic!("pocketsphinx-en-us is not installed (scripts/test.sh installs it)");
    } else {
        eprintln!("skipped: pocketsphinx-en-us is not installed");
        None
    }
}

#[test]
fn digits_names_and_yes_no_over_the_phone() {
    let Some(model) = model() else { return };
    let digits = Grammar::from_hints(&["<digits>"]).unwrap();
    let yes_no = Grammar::from_hints(&["yes", "no", "yes please", "no thank you"]).unwrap();
    let names =
        Grammar::from_hints(&["[my name is] (alice | bob | carol | david | emma)"]).unwrap();
    let departments =
        Grammar::from_hints(&["[i want to talk to] (sales | support) [please]"]).unwrap();
    let cases = [
        ("seven three five", &digits),
        ("four two", &digits),
        ("one eight zero nine", &digits),
        ("six", &digits),
        ("yes", &yes_no),
        ("no", &yes_no),
        ("yes please", &yes_no),
        ("no thank you", &yes_no),
        ("my name is alice", &names),
        ("my name is bob", &names),
        ("carol", &names),
        ("i want to talk to sales", &departments),
        ("support please", &departments),
    ];
    let mut recognizer = Recognizer::new(&model).unwrap();
    let (mut errors, mut words) = (0, 0);
    for (said, grammar) in cases {
        let started = std::time::Instant::now();
        let heard = recognizer.recognize(&telephone(said), Some(grammar)).unwrap();
        let e = word_errors(said, &heard.text);
        eprintln!("{said:>24} → {:<24} {e} wrong, {:?}", heard.text, started.elapsed());
        errors += e;
        words += said.split_whitespace().count();
        if let (Some(first), Some(last)) = (heard.words.first(), heard.words.last()) {
            assert!(first.start_ms <= last.end_ms && last.end_ms < 5000, "{heard:?}");
        }
    }
    let wer = errors as f64 / words as f64;
    eprintln!("word error rate with hints: {errors}/{words} = {:.1} %", wer * 100.0);
    // Measured 2026-12-07: 6/34 = 17.6 % (digits are the weak part). Past a quarter, the audio path
    // (resampling, μ-law, upsampling) or the grammar broke.
    assert!(wer <= 0.25, "word error rate {:.1} %", wer * 100.0);
}

#[test]
fn open_vocabulary_and_unknown_hint_words() {
    let Some(model) = model() else { return };
    let mut recognizer = Recognizer::new(&model).unwrap();
    // Without hints it decodes (open vocabulary is weak at 8 kHz, so what it hears is printed,
    // not checked).
    let heard = recognizer.recognize(&telephone("hello"), None).unwrap();
    eprintln!("open vocabulary: hello → {:?}", heard.text);
    let bad = Grammar::from_hints(&["frobnicate the zyxx"]).unwrap();
    let err = recognizer.recognize(&telephone("hello"), Some(&bad)).unwrap_err();
    assert!(err.to_string().contains("zyxx"), "{err}");
    assert!(recognizer.knows("alice") && !recognizer.knows("zyxx"));
    // Silence is no words, not an error.
    let yes_no = Grammar::from_hints(&["yes", "no"]).unwrap();
    let heard = recognizer.recognize(&[0; 8000], Some(&yes_no)).unwrap();
    assert_eq!(heard.text, "");
}

#[test]
fn missing_model_is_a_clear_error() {
    let mut model = Model::debian_en_us();
    model.acoustic = "/nonexistent/en-us".into();
    let err = Recognizer::new(&model).unwrap_err();
    assert!(err.to_string().contains("pocketsphinx-en-us"), "{err}");
}
