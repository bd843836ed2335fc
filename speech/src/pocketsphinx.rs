//! The calls into the system's libpocketsphinx (and the sphinxbase it links).
//!
//! This is the crate's only `unsafe` code. The decoder and its configuration are owned by
//! exactly one [`Decoder`], created non-null or not at all and freed once in `Drop`; strings
//! passed in are NUL-terminated `CString`s that outlive the call; strings returned are copied
//! before the next call into the decoder (they are owned by it); every buffer carries its length.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;

use crate::{Hypothesis, Model, SpeechError, Word};

#[repr(C)]
struct PsDecoder {
    _private: [u8; 0],
}
#[repr(C)]
struct CmdLn {
    _private: [u8; 0],
}
#[repr(C)]
struct Arg {
    _private: [u8; 0],
}
#[repr(C)]
struct Seg {
    _private: [u8; 0],
}
#[repr(C)]
struct LogMath {
    _private: [u8; 0],
}

#[link(name = "pocketsphinx")]
unsafe extern "C" {
    fn ps_args() -> *const Arg;
    fn ps_init(config: *mut CmdLn) -> *mut PsDecoder;
    fn ps_free(ps: *mut PsDecoder) -> c_int;
    fn ps_start_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_process_raw(
        ps: *mut PsDecoder,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    fn ps_end_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_get_hyp(ps: *mut PsDecoder, out_best_score: *mut i32) -> *const c_char;
    fn ps_get_prob(ps: *mut PsDecoder) -> i32;
    fn ps_get_logmath(ps: *mut PsDecoder) -> *mut LogMath;
    fn ps_seg_iter(ps: *mut PsDecoder) -> *mut Seg;
    fn ps_seg_next(seg: *mut Seg) -> *mut Seg;
    fn ps_seg_word(seg: *mut Seg) -> *const c_char;
    fn ps_seg_frames(seg: *mut Seg, out_sf: *mut c_int, out_ef: *mut c_int);
    fn ps_lookup_word(ps: *mut PsDecoder, word: *const c_char) -> *mut c_char;
    fn ps_set_jsgf_string(ps: *mut PsDecoder, name: *const c_char, jsgf: *const c_char) -> c_int;
    fn ps_set_search(ps: *mut PsDecoder, name: *const c_char) -> c_int;
}

#[link(name = "sphinxbase")]
unsafe extern "C" {
    fn cmd_ln_parse_r(
        inout: *mut CmdLn,
        defn: *const Arg,
        argc: i32,
        argv: *const *const c_char,
        strict: i32,
    ) -> *mut CmdLn;
    fn cmd_ln_free_r(cmdln: *mut CmdLn) -> c_int;
    fn logmath_exp(lmath: *mut LogMath, logb_p: c_int) -> f64;
    fn ckd_free(ptr: *mut c_void);
}

/// The decoder's frame rate: 100 frames per second, 10 ms each.
const MS_PER_FRAME: c_int = 10;
const GRAMMAR: &CStr = c"hints";
/// The name PocketSphinx gives the search it builds from `-lm`.
const DEFAULT_SEARCH: &CStr = c"_default";

pub(crate) struct Decoder {
    ps: NonNull<PsDecoder>,
    config: NonNull<CmdLn>,
}

// The decoder is used by one thread at a time (it is owned, `&mut` for every use).
unsafe impl Send for Decoder {}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pocketsphinx::Decoder")
    }
}

fn c_path(path: &std::path::Path) -> Result<CString, SpeechError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| SpeechError::Engine(format!("{} has a NUL byte", path.display())))
}

impl Decoder {
    pub(crate) fn new(model: &Model) -> Result<Decoder, SpeechError> {
        let args: Vec<CString> = vec![
            c"-hmm".into(),
            c_path(&model.acoustic)?,
            c"-lm".into(),
            c_path(&model.language)?,
            c"-dict".into(),
            c_path(&model.dictionary)?,
            c"-logfn".into(),
            c"/dev/null".into(),
            c"-samprate".into(),
            c"16000".into(),
        ];
        let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        let config = unsafe {
            cmd_ln_parse_r(std::ptr::null_mut(), ps_args(), argv.len() as i32, argv.as_ptr(), 1)
        };
        let config = NonNull::new(config)
            .ok_or_else(|| SpeechError::Engine("the engine refused its configuration".into()))?;
        let ps = unsafe { ps_init(config.as_ptr()) };
        let Some(ps) = NonNull::new(ps) else {
            unsafe { cmd_ln_free_r(config.as_ptr()) };
            return Err(SpeechError::Engine(format!(
                "the engine could not load the model at {}",
                model.acoustic.display()
            )));
        };
        Ok(Decoder { ps, config })
    }

    pub(crate) fn knows(&self, word: &str) -> bool {
        let Ok(word) = CString::new(word) else { return false };
        let phones = unsafe { ps_lookup_word(self.ps.as_ptr(), word.as_ptr()) };
        if phones.is_null() {
            return false;
        }
        unsafe { ckd_free(phones.cast()) };
        true
    }

    pub(crate) fn set_grammar(&mut self, jsgf: &str) -> Result<(), SpeechError> {
        let jsgf = CString::new(jsgf).map_err(|_| SpeechError::Engine("NUL in grammar".into()))?;
        if unsafe { ps_set_jsgf_string(self.ps.as_ptr(), GRAMMAR.as_ptr(), jsgf.as_ptr()) } < 0 {
            return Err(SpeechError::Engine("the engine rejected the hints' grammar".into()));
        }
        self.use_grammar()
    }

    pub(crate) fn use_grammar(&mut self) -> Result<(), SpeechError> {
        self.search(GRAMMAR)
    }

    pub(crate) fn use_language_model(&mut self) -> Result<(), SpeechError> {
        self.search(DEFAULT_SEARCH)
    }

    fn search(&mut self, name: &CStr) -> Result<(), SpeechError> {
        if unsafe { ps_set_search(self.ps.as_ptr(), name.as_ptr()) } < 0 {
            return Err(SpeechError::Engine(format!("no search {name:?}")));
        }
        Ok(())
    }

    pub(crate) fn start(&mut self) -> Result<(), SpeechError> {
        if unsafe { ps_start_utt(self.ps.as_ptr()) } < 0 {
            return Err(SpeechError::Engine("could not start an utterance".into()));
        }
        Ok(())
    }

    pub(crate) fn feed(&mut self, pcm16k: &[i16]) -> Result<(), SpeechError> {
        let rc = unsafe { ps_process_raw(self.ps.as_ptr(), pcm16k.as_ptr(), pcm16k.len(), 0, 0) };
        if rc < 0 {
            return Err(SpeechError::Engine("decoding failed".into()));
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<Hypothesis, SpeechError> {
        let ps = self.ps.as_ptr();
        if unsafe { ps_end_utt(ps) } < 0 {
            return Err(SpeechError::Engine("could not end the utterance".into()));
        }
        let mut score = 0;
        let hyp = unsafe { ps_get_hyp(ps, &mut score) };
        if hyp.is_null() {
            return Ok(Hypothesis { confidence: 0.0, ..Hypothesis::default() });
        }
        let prob = unsafe { ps_get_prob(ps) };
        let confidence = unsafe { logmath_exp(ps_get_logmath(ps), prob) } as f32;
        let mut words = Vec::new();
        let mut seg = unsafe { ps_seg_iter(ps) };
        // Frames count from the decoder's creation; the first segment (`<s>`) starts the
        // utterance.
        let mut base = None;
        while !seg.is_null() {
            let word = unsafe { CStr::from_ptr(ps_seg_word(seg)) }.to_string_lossy().into_owned();
            let (mut sf, mut ef) = (0, 0);
            unsafe { ps_seg_frames(seg, &mut sf, &mut ef) };
            let base = *base.get_or_insert(sf);
            if let Some(word) = spoken(&word) {
                words.push(Word {
                    text: word,
                    start_ms: ((sf - base).max(0) * MS_PER_FRAME) as u32,
                    end_ms: ((ef - base).max(0) * MS_PER_FRAME + MS_PER_FRAME) as u32,
                });
            }
            // Frees the iterator when it returns null at the end.
            seg = unsafe { ps_seg_next(seg) };
        }
        let text = words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
        Ok(Hypothesis { text, confidence: confidence.clamp(0.0, 1.0), words })
    }
}

/// A segment's word without the engine's markers: `<s>`, `</s>`, `<sil>`, `[NOISE]` are not
/// words, nor are a grammar's `(NULL)` transitions; `read(2)` is the second pronunciation of
/// `read`.
fn spoken(word: &str) -> Option<String> {
    let word = word.split('(').next().unwrap_or(word);
    if word.is_empty() || word.starts_with('<') || word.starts_with('[') || word.starts_with('+') {
        return None;
    }
    Some(word.to_owned())
}

impl Drop for Decoder {
    fn drop(&mut self) {
        unsafe {
            ps_free(self.ps.as_ptr());
            cmd_ln_free_r(self.config.as_ptr());
        }
    }
}
