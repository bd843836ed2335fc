//! WAV files: reading prompts and music-on-hold, writing call recordings.
//!
//! Reading ([`read_wav`]) accepts what people actually upload — RIFF/WAVE with 8-, 16-, 24- or
//! 32-bit integer PCM or 32-bit float, `WAVE_FORMAT_EXTENSIBLE`, any sample rate, any number
//! of channels, unknown chunks such as `LIST` before or after `fmt ` — and produces mono
//! 16-bit samples (channels averaged) plus the rate; resample with [`crate::resample`] if
//! needed. Anything else gets an error that names the problem (compressed format, truncated
//! file…), never a panic.
//!
//! Writing ([`WavWriter`]) produces 16-bit PCM, mono or stereo (one channel per call leg for
//! dual-channel recordings). A recording can end at any moment — the caller hangs up, the
//! task is cancelled — so the writer is built to leave a valid file behind: the header first
//! goes out with "unknown length" sizes (`0xFFFFFFFF`, the streaming convention honoured by
//! ffmpeg, sox and [`read_wav`]), [`WavWriter::update_header`] patches the real sizes at any
//! time, [`WavWriter::finalize`] patches them at the end, and dropping an unfinalized writer
//! patches them as a best effort. It works over any `Write + Seek` (a file, a `Cursor`).

use std::io::{self, Seek, SeekFrom, Write};

use thiserror::Error;

use crate::bytes;

const FORMAT_PCM: u16 = 1;
const FORMAT_FLOAT: u16 = 3;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The 14 bytes after the format code in the KSDATAFORMAT_SUBTYPE_* GUIDs.
const SUBFORMAT_GUID_TAIL: [u8; 14] =
    [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71];
/// Size value meaning "until the end of the file" (streamed or unfinalized WAV).
const UNKNOWN_SIZE: u32 = u32::MAX;
const HEADER_LEN: u32 = 44;

/// Why a WAV file cannot be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WavError {
    #[error("not a WAV file: it does not start with a RIFF header")]
    NotRiff,
    #[error("not a WAV file: the RIFF form type is not WAVE")]
    NotWave,
    #[error("WAV file has no fmt chunk")]
    MissingFormat,
    #[error("WAV file has no data chunk")]
    MissingData,
    /// A chunk claims more bytes than the file has (an interrupted upload or copy).
    #[error("WAV file is truncated: chunk {:?} declares {declared} bytes, only {available} remain", String::from_utf8_lossy(.chunk))]
    Truncated { chunk: [u8; 4], declared: u32, available: usize },
    /// Compressed or otherwise unsupported encoding (e.g. ADPCM, GSM, MP3-in-WAV).
    #[error("WAV format code {0:#06x} is not supported: convert the file to PCM")]
    UnsupportedFormat(u16),
    #[error("{bits}-bit {} samples are not supported: use 8/16/24/32-bit PCM or 32-bit float", if *.float { "float" } else { "integer" })]
    UnsupportedSampleSize { bits: u16, float: bool },
    /// The fmt chunk contradicts itself (zero channels or rate, wrong block alignment…).
    #[error("WAV fmt chunk is invalid: {0}")]
    InvalidFormat(&'static str),
    /// The writer was given samples for the wrong number of channels.
    #[error("the WAV writer has {expected} channel(s), the samples are for {got}")]
    ChannelMismatch { expected: u16, got: u16 },
    /// Interleaved samples that do not make whole frames.
    #[error("{samples} interleaved samples do not make whole frames of {channels} channels")]
    PartialFrame { samples: usize, channels: u16 },
    /// WAV sizes are 32-bit: a file stops at 4 GiB.
    #[error("the WAV file would exceed the 4 GiB limit of the format")]
    TooLarge,
    #[error("WAV I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// Decoded audio: mono, 16-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavAudio {
    pub sample_rate: u32,
    /// Channels in the file (mixed down into `samples`).
    pub channels: u16,
    pub samples: Vec<i16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Int,
    Float,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    encoding: Encoding,
    channels: u16,
    sample_rate: u32,
    /// Bytes per sample of one channel.
    width: usize,
}

/// Reads a WAV file into mono 16-bit samples.
pub fn read_wav(data: &[u8]) -> Result<WavAudio, WavError> {
    if bytes::slice(data, 0, 4) != Some(b"RIFF") {
        return Err(WavError::NotRiff);
    }
    if bytes::slice(data, 8, 4) != Some(b"WAVE") {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    let mut samples = None;
    let mut pos = 12;
    while pos < data.len() && (format.is_none() || samples.is_none()) {
        let (Some(id), Some(size)) = (bytes::slice(data, pos, 4), bytes::le_u32(data, pos + 4))
        else {
            break; // a few stray bytes at the end: no further chunk
        };
        let id: [u8; 4] = id.try_into().unwrap_or([0; 4]);
        let start = pos + 8;
        let available = data.len() - start.min(data.len());
        let body = if id == *b"data" && size == UNKNOWN_SIZE {
            data.get(start..).unwrap_or(&[])
        } else {
            bytes::slice(data, start, size as usize).ok_or(WavError::Truncated {
                chunk: id,
                declared: size,
                available,
            })?
        };
        match &id {
            b"fmt " => format = Some(parse_format(body)?),
            b"data" => samples = Some(body),
            _ => {} // LIST, fact, cue, bext…
        }
        // Chunks are word-aligned: an odd-sized chunk is followed by a pad byte.
        pos = start.saturating_add(body.len()).saturating_add(body.len() & 1);
    }
    let format = format.ok_or(WavError::MissingFormat)?;
    let body = samples.ok_or(WavError::MissingData)?;
    Ok(WavAudio {
        sample_rate: format.sample_rate,
        channels: format.channels,
        samples: decode(body, format),
    })
}

fn parse_format(body: &[u8]) -> Result<Format, WavError> {
    let (Some(mut tag), Some(channels), Some(sample_rate), Some(block_align), Some(bits)) = (
        bytes::le_u16(body, 0),
        bytes::le_u16(body, 2),
        bytes::le_u32(body, 4),
        bytes::le_u16(body, 12),
        bytes::le_u16(body, 14),
    ) else {
        return Err(WavError::InvalidFormat("the fmt chunk is shorter than 16 bytes"));
    };
    if tag == FORMAT_EXTENSIBLE {
        let (Some(sub), Some(tail)) = (bytes::le_u16(body, 24), bytes::slice(body, 26, 14)) else {
            return Err(WavError::InvalidFormat("WAVE_FORMAT_EXTENSIBLE without a sub-format"));
        };
        if tail != SUBFORMAT_GUID_TAIL {
            return Err(WavError::UnsupportedFormat(FORMAT_EXTENSIBLE));
        }
        tag = sub;
    }
    let encoding = match tag {
        FORMAT_PCM => Encoding::Int,
        FORMAT_FLOAT => Encoding::Float,
        other => return Err(WavError::UnsupportedFormat(other)),
    };
    match (encoding, bits) {
        (Encoding::Int, 8 | 16 | 24 | 32) | (Encoding::Float, 32) => {}
        _ => {
            return Err(WavError::UnsupportedSampleSize {
                bits,
                float: encoding == Encoding::Float,
            });
        }
    }
    if channels == 0 {
        return Err(WavError::InvalidFormat("zero channels"));
    }
    if sample_rate == 0 {
        return Err(WavError::InvalidFormat("zero sample rate"));
    }
    let width = usize::from(bits / 8);
    if usize::from(block_align) != width * usize::from(channels) {
        return Err(WavError::InvalidFormat(
            "block alignment does not match channels × sample size",
        ));
    }
    Ok(Format { encoding, channels, sample_rate, width })
}

/// One sample as 16-bit.
fn sample(b: &[u8], encoding: Encoding) -> i16 {
    match (encoding, b) {
        (Encoding::Int, &[u]) => (i16::from(u) - 128) << 8,
        (Encoding::Int, &[lo, hi]) => i16::from_le_bytes([lo, hi]),
        // Integer samples are left-justified: the top 16 bits are the 16-bit sample.
        (Encoding::Int, &[_, lo, hi]) | (Encoding::Int, &[_, _, lo, hi]) => {
            i16::from_le_bytes([lo, hi])
        }
        (Encoding::Float, &[a, b, c, d]) => {
            let f = f32::from_le_bytes([a, b, c, d]);
            if f.is_nan() { 0 } else { (f.clamp(-1.0, 1.0) * 32767.0).round() as i16 }
        }
        _ => 0,
    }
}

fn decode(body: &[u8], f: Format) -> Vec<i16> {
    let channels = usize::from(f.channels);
    // A trailing partial frame (a broken writer) is ignored.
    body.chunks_exact(f.width * channels)
        .map(|frame| {
            let sum: i32 =
                frame.chunks_exact(f.width).map(|s| i32::from(sample(s, f.encoding))).sum();
            (sum / channels as i32) as i16
        })
        .collect()
}

/// Writes a 16-bit PCM WAV file incrementally; see the module docs for crash tolerance.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    /// `None` only after `finalize` took it.
    inner: Option<W>,
    channels: u16,
    /// Stream position of the RIFF header.
    start: u64,
    data_bytes: u32,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Starts a file at the current position of `inner`. `channels` is 1 or 2.
    pub fn new(mut inner: W, sample_rate: u32, channels: u16) -> Result<Self, WavError> {
        if !(1..=2).contains(&channels) {
            return Err(WavError::InvalidFormat("the writer supports 1 or 2 channels"));
        }
        if sample_rate == 0 {
            return Err(WavError::InvalidFormat("zero sample rate"));
        }
        let start = inner.stream_position()?;
        let block_align = channels * 2;
        let mut h = Vec::with_capacity(HEADER_LEN as usize);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&FORMAT_PCM.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&sample_rate.to_le_bytes());
        h.extend_from_slice(&(sample_rate.saturating_mul(u32::from(block_align))).to_le_bytes());
        h.extend_from_slice(&block_align.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
        inner.write_all(&h)?;
        Ok(WavWriter { inner: Some(inner), channels, start, data_bytes: 0 })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Sample frames written so far (one sample per channel each).
    pub fn frames_written(&self) -> u64 {
        u64::from(self.data_bytes) / (2 * u64::from(self.channels))
    }

    /// Appends mono samples (mono writers only).
    pub fn write_mono(&mut self, samples: &[i16]) -> Result<(), WavError> {
        if self.channels != 1 {
            return Err(WavError::ChannelMismatch { expected: self.channels, got: 1 });
        }
        self.write_samples(samples.iter().copied(), samples.len())
    }

    /// Appends one frame per sample of the longer slice, interleaving `left` and `right`
    /// (stereo writers only); the shorter side is padded with silence.
    pub fn write_stereo(&mut self, left: &[i16], right: &[i16]) -> Result<(), WavError> {
        if self.channels != 2 {
            return Err(WavError::ChannelMismatch { expected: self.channels, got: 2 });
        }
        let frames = left.len().max(right.len());
        let sample = |side: &[i16], i: usize| side.get(i).copied().unwrap_or(0);
        let interleaved = (0..frames).flat_map(|i| [sample(left, i), sample(right, i)]);
        self.write_samples(interleaved, frames * 2)
    }

    /// Appends already-interleaved samples; the count must be a multiple of the channels.
    pub fn write_interleaved(&mut self, samples: &[i16]) -> Result<(), WavError> {
        if !samples.len().is_multiple_of(usize::from(self.channels)) {
            return Err(WavError::PartialFrame { samples: samples.len(), channels: self.channels });
        }
        self.write_samples(samples.iter().copied(), samples.len())
    }

    fn write_samples(
        &mut self,
        samples: impl Iterator<Item = i16>,
        count: usize,
    ) -> Result<(), WavError> {
        // `inner` is only taken by `finalize`, which consumes the writer.
        let inner = self.inner.as_mut().ok_or(WavError::InvalidFormat("writer finalized"))?;
        let added = u32::try_from(count * 2).map_err(|_| WavError::TooLarge)?;
        let total = self
            .data_bytes
            .checked_add(added)
            .filter(|t| t.checked_add(HEADER_LEN - 8).is_some_and(|riff| riff < UNKNOWN_SIZE))
            .ok_or(WavError::TooLarge)?;
        let buf: Vec<u8> = samples.flat_map(i16::to_le_bytes).collect();
        inner.write_all(&buf)?;
        self.data_bytes = total;
        Ok(())
    }

    /// Writes the current sizes into the header (and returns to the end), so the file is
    /// complete as of now even if the process dies before [`finalize`](Self::finalize).
    pub fn update_header(&mut self) -> Result<(), WavError> {
        let Some(inner) = self.inner.as_mut() else { return Ok(()) };
        patch_sizes(inner, self.start, self.data_bytes)?;
        Ok(())
    }

    /// Patches the sizes, flushes, and returns the underlying writer.
    pub fn finalize(mut self) -> Result<W, WavError> {
        self.update_header()?;
        let mut inner = self.inner.take().ok_or(WavError::InvalidFormat("writer finalized"))?;
        inner.flush()?;
        Ok(inner)
    }
}

fn patch_sizes<W: Write + Seek>(w: &mut W, start: u64, data_bytes: u32) -> io::Result<()> {
    let end = w.stream_position()?;
    w.seek(SeekFrom::Start(start + 4))?;
    w.write_all(&(data_bytes + HEADER_LEN - 8).to_le_bytes())?;
    w.seek(SeekFrom::Start(start + u64::from(HEADER_LEN) - 4))?;
    w.write_all(&data_bytes.to_le_bytes())?;
    w.seek(SeekFrom::Start(end))?;
    Ok(())
}

impl<W: Write + Seek> Drop for WavWriter<W> {
    /// Best effort: an unfinalized recording still gets its sizes (errors cannot be reported
    /// from `drop`; call `finalize` to see them).
    fn drop(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            let _ = patch_sizes(inner, self.start, self.data_bytes).and_then(|()| inner.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::io::Cursor;

    /// A WAV file from a format code, channels, rate, bits, extra chunks and data.
    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        riff(&[(b"fmt ", fmt), (b"data", data.to_vec())])
    }

    fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn le16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn reads_16_bit_mono() {
        let file = wav(1, 1, 8000, 16, &le16(&[0, 1, -1, 32767, -32768]));
        let audio = read_wav(&file).unwrap();
        assert_eq!(
            audio,
            WavAudio { sample_rate: 8000, channels: 1, samples: vec![0, 1, -1, 32767, -32768] }
        );
    }

    #[test]
    fn mixes_stereo_down_to_mono() {
        let file = wav(1, 2, 44_100, 16, &le16(&[1000, 3000, -100, 100, 32767, 32767]));
        let audio = read_wav(&file).unwrap();
        assert_eq!((audio.sample_rate, audio.channels), (44_100, 2));
        assert_eq!(audio.samples, vec![2000, 0, 32767]);
    }

    #[test]
    fn reads_8_24_32_bit_and_float() {
        let file = wav(1, 1, 8000, 8, &[128, 255, 0, 129]);
        assert_eq!(read_wav(&file).unwrap().samples, vec![0, 32512, -32768, 256]);

        // 24-bit: 0x123456 → 0x1234; -1 → -1 (0xFFFF).
        let file = wav(1, 1, 48_000, 24, &[0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0, 0, 0x80]);
        assert_eq!(read_wav(&file).unwrap().samples, vec![0x1234, -1, -32768]);

        let data: Vec<u8> =
            [i32::MAX, i32::MIN, 0x0001_0000].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(
            read_wav(&wav(1, 1, 16_000, 32, &data)).unwrap().samples,
            vec![32767, -32768, 1]
        );

        let data: Vec<u8> =
            [0.0f32, 0.5, -1.0, 2.0, f32::NAN].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(
            read_wav(&wav(3, 1, 8000, 32, &data)).unwrap().samples,
            vec![0, 16384, -32767, 32767, 0]
        );
    }

    #[test]
    fn reads_wave_format_extensible() {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&0xFFFEu16.to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16_000u32.to_le_bytes());
        fmt.extend_from_slice(&64_000u32.to_le_bytes());
        fmt.extend_from_slice(&4u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        fmt.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        fmt.extend_from_slice(&3u32.to_le_bytes()); // front left | front right
        fmt.extend_from_slice(&1u16.to_le_bytes()); // KSDATAFORMAT_SUBTYPE_PCM
        fmt.extend_from_slice(&SUBFORMAT_GUID_TAIL);
        let file = riff(&[(b"fmt ", fmt.clone()), (b"data", le16(&[10, 20, -10, -30]))]);
        let audio = read_wav(&file).unwrap();
        assert_eq!((audio.sample_rate, audio.channels, audio.samples), (16_000, 2, vec![15, -20]));

        let mut odd = fmt;
        odd[24] = 0x55; // an MPEG sub-format
        let file = riff(&[(b"fmt ", odd.clone()), (b"data", vec![])]);
        assert!(matches!(read_wav(&file), Err(WavError::UnsupportedFormat(0x55))));
        odd[30] ^= 1; // not the standard GUID family
        let file = riff(&[(b"fmt ", odd), (b"data", vec![])]);
        assert!(matches!(read_wav(&file), Err(WavError::UnsupportedFormat(0xFFFE))));
    }

    #[test]
    fn skips_unknown_chunks_with_odd_sizes_in_any_order() {
        let good = wav(1, 1, 8000, 16, &le16(&[5, 6]));
        let fmt = good[20..36].to_vec();
        let file = riff(&[
            (b"LIST", b"INFOISFT\x05\0\0\0Lavf\0".to_vec()), // 17 bytes: padded
            (b"fmt ", fmt.clone()),
            (b"fact", vec![2, 0, 0, 0]),
            (b"data", le16(&[5, 6])),
            (b"LIST", vec![1, 2, 3]),
        ]);
        assert_eq!(read_wav(&file).unwrap().samples, vec![5, 6]);
        // data before fmt is fine too.
        let file = riff(&[(b"data", le16(&[7])), (b"fmt ", fmt)]);
        assert_eq!(read_wav(&file).unwrap().samples, vec![7]);
    }

    #[test]
    fn clear_errors_for_bad_files() {
        assert!(matches!(read_wav(b""), Err(WavError::NotRiff)));
        assert!(matches!(read_wav(b"RIFX\0\0\0\0WAVE"), Err(WavError::NotRiff)));
        assert!(matches!(read_wav(b"RIFF\0\0\0\0AVI "), Err(WavError::NotWave)));
        assert!(matches!(read_wav(&riff(&[(b"data", vec![])])), Err(WavError::MissingFormat)));
        let fmt = wav(1, 1, 8000, 16, &[])[20..36].to_vec();
        assert!(matches!(read_wav(&riff(&[(b"fmt ", fmt)])), Err(WavError::MissingData)));

        let mut cut = wav(1, 1, 8000, 16, &le16(&[1, 2, 3, 4]));
        cut.truncate(cut.len() - 3);
        let err = read_wav(&cut).unwrap_err();
        assert!(matches!(
            err,
            WavError::Truncated { chunk: [b'd', b'a', b't', b'a'], declared: 8, available: 5 }
        ));
        assert!(err.to_string().contains("\"data\" declares 8 bytes, only 5 remain"), "{err}");

        assert!(matches!(read_wav(&wav(2, 1, 8000, 4, &[])), Err(WavError::UnsupportedFormat(2))));
        assert!(matches!(read_wav(&wav(7, 1, 8000, 8, &[])), Err(WavError::UnsupportedFormat(7))));
        assert!(matches!(
            read_wav(&wav(1, 1, 8000, 12, &[])),
            Err(WavError::UnsupportedSampleSize { bits: 12, float: false })
        ));
        assert!(matches!(
            read_wav(&wav(3, 1, 8000, 64, &[])),
            Err(WavError::UnsupportedSampleSize { bits: 64, float: true })
        ));
        assert!(matches!(read_wav(&wav(1, 0, 8000, 16, &[])), Err(WavError::InvalidFormat(_))));
        assert!(matches!(read_wav(&wav(1, 1, 0, 16, &[])), Err(WavError::InvalidFormat(_))));
        let mut bad_align = wav(1, 2, 8000, 16, &[]);
        bad_align[32] = 3;
        assert!(matches!(read_wav(&bad_align), Err(WavError::InvalidFormat(_))));
        let short_fmt = riff(&[(b"fmt ", vec![1, 0, 1, 0]), (b"data", vec![])]);
        assert!(matches!(read_wav(&short_fmt), Err(WavError::InvalidFormat(_))));
    }

    #[test]
    fn prefixes_and_random_bytes_never_panic() {
        let file = wav(1, 2, 8000, 16, &le16(&[1, 2, 3, 4, 5, 6]));
        for end in 0..file.len() {
            let _ = read_wav(&file[..end]);
        }
        let mut rng = XorShift::new(99);
        for _ in 0..5000 {
            let mut f = file.clone();
            for _ in 0..3 {
                let i = rng.below(f.len() as u64) as usize;
                f[i] = rng.next_u8();
            }
            let _ = read_wav(&f);
            let len = rng.below(64) as usize;
            let _ = read_wav(&rng.bytes(len));
        }
    }

    #[test]
    fn writer_round_trips_mono() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 % 65_536 - 32_768) as i16).collect();
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 8000, 1).unwrap();
        w.write_mono(&samples[..300]).unwrap();
        w.write_mono(&samples[300..]).unwrap();
        assert_eq!(w.frames_written(), 1000);
        let bytes = w.finalize().unwrap().into_inner();
        assert_eq!(bytes.len(), 44 + 2000);
        assert_eq!(&bytes[4..8], &2036u32.to_le_bytes());
        assert_eq!(&bytes[40..44], &2000u32.to_le_bytes());
        let audio = read_wav(&bytes).unwrap();
        assert_eq!((audio.sample_rate, audio.channels), (8000, 1));
        assert_eq!(audio.samples, samples);
    }

    #[test]
    fn writer_interleaves_two_legs() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 16_000, 2).unwrap();
        w.write_stereo(&[1, 2, 3], &[10, 20]).unwrap();
        w.write_interleaved(&[4, 40]).unwrap();
        assert!(matches!(
            w.write_interleaved(&[1]),
            Err(WavError::PartialFrame { samples: 1, channels: 2 })
        ));
        assert!(matches!(
            w.write_mono(&[1]),
            Err(WavError::ChannelMismatch { expected: 2, got: 1 })
        ));
        let bytes = w.finalize().unwrap().into_inner();
        assert_eq!(&bytes[44..], &le16(&[1, 10, 2, 20, 3, 0, 4, 40])[..]);
        assert_eq!(&bytes[22..24], &2u16.to_le_bytes());
        assert_eq!(&bytes[28..32], &64_000u32.to_le_bytes()); // byte rate
        assert_eq!(read_wav(&bytes).unwrap().samples, vec![5, 11, 1, 22]);

        let mut mono = WavWriter::new(Cursor::new(Vec::new()), 8000, 1).unwrap();
        assert!(matches!(mono.write_stereo(&[1], &[1]), Err(WavError::ChannelMismatch { .. })));
        assert!(WavWriter::new(Cursor::new(Vec::new()), 8000, 3).is_err());
        assert!(WavWriter::new(Cursor::new(Vec::new()), 0, 1).is_err());
    }

    #[test]
    fn an_interrupted_recording_is_still_readable() {
        // Never finalized nor dropped (the process died): the "unknown size" header lets
        // the reader take the data to the end of the file.
        let mut cursor = Cursor::new(Vec::new());
        let mut w = WavWriter::new(&mut cursor, 8000, 1).unwrap();
        w.write_mono(&[1, 2, 3]).unwrap();
        std::mem::forget(w);
        assert_eq!(read_wav(cursor.get_ref()).unwrap().samples, vec![1, 2, 3]);

        // Dropped without finalize (the call task was cancelled): sizes are patched.
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut w = WavWriter::new(&mut cursor, 8000, 1).unwrap();
            w.write_mono(&[4, 5]).unwrap();
        }
        assert_eq!(&cursor.get_ref()[40..44], &4u32.to_le_bytes());
        assert_eq!(read_wav(cursor.get_ref()).unwrap().samples, vec![4, 5]);
    }

    #[test]
    fn update_header_makes_the_file_valid_midway_and_writing_continues() {
        let mut cursor = Cursor::new(b"prefix".to_vec());
        cursor.set_position(6);
        let mut w = WavWriter::new(&mut cursor, 8000, 1).unwrap();
        w.write_mono(&[1, 2]).unwrap();
        w.update_header().unwrap();
        w.write_mono(&[3]).unwrap();
        w.finalize().unwrap();
        let bytes = cursor.into_inner();
        assert_eq!(&bytes[..6], b"prefix");
        assert_eq!(read_wav(&bytes[6..]).unwrap().samples, vec![1, 2, 3]);
    }

    #[test]
    fn the_4_gib_limit_is_an_error_not_a_corrupt_file() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 8000, 1).unwrap();
        w.data_bytes = u32::MAX - 40;
        assert!(matches!(w.write_mono(&[0; 4]), Err(WavError::TooLarge)));
        assert_eq!(w.data_bytes, u32::MAX - 40);
        std::mem::forget(w); // do not patch a header with the fake size
    }
}
