//! Prompts: what `say` and `play` put on a call, as 8 kHz mono samples.
//!
//! - `say(text)` goes through a [`Tts`] engine. The built-in one runs espeak-ng (Debian
//!   package `espeak-ng`) as a process; a render is cached by text + voice in memory and, with
//!   a cache directory, on disk — a greeting is synthesised once per machine, not per call.
//!   Cloud engines plug in behind the same trait.
//! - `play(name)` reads a WAV asset from the assets directory (any common rate and bit depth;
//!   resampled), cached in memory. Names cannot leave the directory.
//! - `play(url)` fetches a WAV over http(s) — only a URL the flow's manifest allows (checked by
//!   the caller, [`Manifest::check_play`](crate::manifest::Manifest::check_play)) — once, with
//!   a size cap and a timeout, not following redirects (they could leave the allow-list), and
//!   keeps it in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use voxide_media::resample;
use voxide_media::wav::read_wav;

/// Samples per second of everything this module returns.
pub const RATE: u32 = 8000;

/// A text-to-speech engine. `render` may block (it runs on a blocking thread).
pub trait Tts: Send + Sync + std::fmt::Debug {
    /// Speech for `text` as 8 kHz mono samples.
    fn render(&self, text: &str, voice: Option<&str>) -> Result<Vec<i16>, String>;
    /// A name for logs and cache keys (engine + version), so two engines never share renders.
    fn id(&self) -> String;
}

/// espeak-ng, called as a process (`espeak-ng -w out.wav`, text on stdin).
#[derive(Debug, Clone)]
pub struct Espeak {
    pub binary: PathBuf,
}

impl Espeak {
    /// espeak-ng from `PATH`, if installed.
    pub fn find() -> Option<Espeak> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("espeak-ng"))
            .find(|p| p.is_file())
            .map(|binary| Espeak { binary })
    }
}

impl Tts for Espeak {
    fn render(&self, text: &str, voice: Option<&str>) -> Result<Vec<i16>, String> {
        use std::io::Write;
        static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = TempFile(
            std::env::temp_dir().join(format!("voxide-tts-{}-{n}.wav", std::process::id())),
        );
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("-w").arg(&out.0).arg("--stdin");
        if let Some(voice) =
            voice.filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || "-+_".contains(c)))
        {
            cmd.args(["-v", voice]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(|e| format!("espeak-ng stdin: {e}"))?;
        }
        let output = child.wait_with_output().map_err(|e| format!("espeak-ng: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "espeak-ng failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let bytes = std::fs::read(&out.0).map_err(|e| format!("reading TTS output: {e}"))?;
        to_8k(&bytes)
    }

    fn id(&self) -> String {
        "espeak-ng".into()
    }
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Decodes a WAV file to 8 kHz mono.
pub fn to_8k(bytes: &[u8]) -> Result<Vec<i16>, String> {
    let audio = read_wav(bytes).map_err(|e| e.to_string())?;
    Ok(if audio.sample_rate == RATE {
        audio.samples
    } else {
        resample::resample(&audio.samples, audio.sample_rate, RATE).map_err(|e| e.to_string())?
    })
}

/// Why a prompt could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("no text-to-speech engine: install espeak-ng (Debian package espeak-ng)")]
    NoTts,
    #[error("text-to-speech failed: {0}")]
    Tts(String),
    #[error("media {0:?} is not an asset name (letters, digits, - _ . / only, no ..)")]
    BadName(String),
    #[error("media {0:?}: a URL is fetched with `fetch`, after the manifest allowed it")]
    Url(String),
    #[error("media {url}: {why}")]
    Fetch { url: String, why: String },
    #[error("media {name:?}: {why}")]
    Asset { name: String, why: String },
}

/// Renders and caches prompts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Prompts {
    tts: Option<Arc<dyn Tts>>,
    assets: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    memory: Arc<Mutex<HashMap<String, Arc<[i16]>>>>,
    http: reqwest::Client,
}

/// Largest audio file `play` fetches from a URL (16 MiB: over 15 minutes of 8 kHz 16-bit).
pub const MAX_URL_BYTES: usize = 16 << 20;
/// How long fetching one URL may take.
pub const URL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Renders kept in memory at most (oldest dropped first is not tracked: the map is cleared).
const MEMORY_ENTRIES: usize = 2048;

impl Prompts {
    /// `tts`: the speech engine (None: `say` fails with [`PromptError::NoTts`]); `assets`:
    /// where `play` looks; `cache_dir`: where renders are kept across restarts.
    pub fn new(
        tts: Option<Arc<dyn Tts>>,
        assets: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> Prompts {
        let http = reqwest::Client::builder()
            .timeout(URL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voxide/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Prompts { tts, assets, cache_dir, memory: Arc::new(Mutex::new(HashMap::new())), http }
    }

    pub fn has_tts(&self) -> bool {
        self.tts.is_some()
    }

    fn remember(&self, key: String, pcm: Arc<[i16]>) {
        if let Ok(mut memory) = self.memory.lock() {
            if memory.len() >= MEMORY_ENTRIES {
                memory.clear();
            }
            memory.insert(key, pcm);
        }
    }

    fn recall(&self, key: &str) -> Option<Arc<[i16]>> {
        self.memory.lock().ok().and_then(|m| m.get(key).cloned())
    }

    /// Speech for `text`, rendered once per text, voice and engine.
    pub async fn say(&self, text: &str, voice: Option<&str>) -> Result<Arc<[i16]>, PromptError> {
        let tts = self.tts.clone().ok_or(PromptError::NoTts)?;
        let key = hex::encode(Sha256::digest(
            format!("{}\0{}\0{text}", tts.id(), voice.unwrap_or_default()).as_bytes(),
        ));
        if let Some(pcm) = self.recall(&key) {
            return Ok(pcm);
        }
        let disk = self.cache_dir.as_ref().map(|d| d.join(format!("{key}.pcm")));
        if let Some(path) = &disk
            && let Ok(bytes) = tokio::fs::read(path).await
        {
            let pcm: Arc<[i16]> =
                bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
            self.remember(key, pcm.clone());
            return Ok(pcm);
        }
        let (text, voice) = (text.to_owned(), voice.map(str::to_owned));
        let pcm = tokio::task::spawn_blocking(move || tts.render(&text, voice.as_deref()))
            .await
            .map_err(|e| PromptError::Tts(e.to_string()))?
            .map_err(PromptError::Tts)?;
        let pcm: Arc<[i16]> = pcm.into();
        if let Some(path) = disk {
            let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
            write_atomically(&path, &bytes).await;
        }
        self.remember(key, pcm.clone());
        Ok(pcm)
    }

    /// A WAV file at `url` (which the flow's manifest allowed), fetched once per process.
    pub async fn fetch(&self, url: &url::Url) -> Result<Arc<[i16]>, PromptError> {
        let key = format!("url:{url}");
        if let Some(pcm) = self.recall(&key) {
            return Ok(pcm);
        }
        let fail = |why: String| PromptError::Fetch { url: url.to_string(), why };
        let mut response = self.http.get(url.clone()).send().await.map_err(|e| {
            fail(if e.is_timeout() {
                format!("no answer within {URL_TIMEOUT:?}")
            } else {
                e.to_string()
            })
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(fail(format!("HTTP {status}: redirects are not followed")));
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let too_big = || fail(format!("larger than {} MiB", MAX_URL_BYTES >> 20));
        if response.content_length().is_some_and(|n| n > MAX_URL_BYTES as u64) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_URL_BYTES {
                return Err(too_big());
            }
        }
        let pcm: Arc<[i16]> =
            to_8k(&bytes).map_err(|e| fail(format!("not a usable WAV: {e}")))?.into();
        self.remember(key, pcm.clone());
        Ok(pcm)
    }

    /// A WAV asset by name (relative to the assets directory).
    pub async fn play(&self, name: &str) -> Result<Arc<[i16]>, PromptError> {
        if name.contains("://") {
            return Err(PromptError::Url(name.to_owned()));
        }
        let valid = !name.is_empty()
            && !name.starts_with('/')
            && name.split('/').all(|part| !part.is_empty() && part != ".." && part != ".")
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !valid {
            return Err(PromptError::BadName(name.to_owned()));
        }
        let key = format!("asset:{name}");
        if let Some(pcm) = self.recall(&key) {
            return Ok(pcm);
        }
        let asset = |why: String| PromptError::Asset { name: name.to_owned(), why };
        let dir =
            self.assets.as_ref().ok_or_else(|| asset("no assets directory configured".into()))?;
        let bytes = tokio::fs::read(dir.join(name)).await.map_err(|e| asset(e.to_string()))?;
        let pcm: Arc<[i16]> = to_8k(&bytes).map_err(asset)?.into();
        self.remember(key, pcm.clone());
        Ok(pcm)
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if tokio::fs::create_dir_all(dir).await.is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if tokio::fs::write(&tmp, bytes).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, path).await;
    }
}

/// Hold music when no `hold-music.wav` asset exists: a soft two-note chime every 3 s
/// (so a caller on hold knows the line is alive).
pub fn hold_music() -> Arc<[i16]> {
    let n = RATE as usize * 3;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let note = |start: f64, hz: f64| {
                let dt = t - start;
                if (0.0..0.6).contains(&dt) {
                    (-4.0 * dt).exp() * (2.0 * std::f64::consts::PI * hz * dt).sin()
                } else {
                    0.0
                }
            };
            (3000.0 * (note(0.0, 659.3) + note(0.4, 523.3))) as i16
        })
        .collect()
}

/// A beep: 400 ms of 1 kHz at -12 dBFS, with 5 ms fades.
pub fn beep() -> Arc<[i16]> {
    let n = (RATE as usize) * 400 / 1000;
    let fade = (RATE as usize) * 5 / 1000;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let gain = (i.min(n - 1 - i) as f64 / fade as f64).min(1.0);
            (8192.0 * gain * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asset_names_cannot_escape_the_directory() {
        let prompts = Prompts::new(None, Some(PathBuf::from("/nonexistent")), None);
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "x y.wav", ""] {
            assert!(matches!(prompts.play(bad).await, Err(PromptError::BadName(_))), "{bad}");
        }
        assert!(matches!(prompts.play("https://x/y.wav").await, Err(PromptError::Url(_))));
        assert!(matches!(prompts.play("missing.wav").await, Err(PromptError::Asset { .. })));
        assert_eq!(prompts.say("hi", None).await, Err(PromptError::NoTts));
    }

    #[tokio::test]
    async fn espeak_renders_speech_once_and_caches_it() {
        let Some(espeak) = Espeak::find() else {
            // scripts/test.sh installs espeak-ng; only a bare `cargo test` may lack it.
            assert!(std::env::var_os("CI").is_none(), "espeak-ng must be installed in CI");
            eprintln!("espeak-ng not installed: skipped");
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let prompts = Prompts::new(Some(Arc::new(espeak)), None, Some(cache.path().into()));
        let pcm = prompts.say("Hello from Voxide.", None).await.unwrap();
        // About a second of speech, not silence.
        assert!((4000..40_000).contains(&pcm.len()), "{} samples", pcm.len());
        let loud = pcm.iter().filter(|s| s.unsigned_abs() > 1000).count();
        assert!(loud > pcm.len() / 20, "mostly silent: {loud} loud samples");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "cached on disk");
        let again = Prompts::new(None, None, Some(cache.path().into()));
        // A fresh instance without an engine still fails fast (NoTts) rather than reading
        // a cache it cannot refill …
        assert_eq!(again.say("Hello from Voxide.", None).await, Err(PromptError::NoTts));
        // … and one with the same engine reads the render from disk without running it.
        let restarted = Prompts::new(Some(Arc::new(Unrunnable)), None, Some(cache.path().into()));
        assert_eq!(restarted.say("Hello from Voxide.", None).await.unwrap(), pcm);
        assert!(restarted.say("Not cached yet.", None).await.is_err(), "the engine was run");
    }

    /// A loopback HTTP server answering every request with `response` (head + body).
    async fn http_server(
        response: Vec<u8>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(&response).await;
            }
        });
        (addr, hits)
    }

    fn wav_16k(samples: &[i16]) -> Vec<u8> {
        let mut w =
            voxide_media::wav::WavWriter::new(std::io::Cursor::new(Vec::new()), 16_000, 1).unwrap();
        w.write_interleaved(samples).unwrap();
        w.finalize().unwrap().into_inner()
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[tokio::test]
    async fn a_url_is_fetched_once_resampled_and_cached() {
        let tone: Vec<i16> = (0..24_000).map(|i| ((i % 40) as i16 - 20) * 300).collect();
        let (addr, hits) = http_server(ok(&wav_16k(&tone))).await;
        let prompts = Prompts::new(None, None, None);
        let url = url::Url::parse(&format!("http://{addr}/a.wav")).unwrap();
        let pcm = prompts.fetch(&url).await.unwrap();
        assert_eq!(pcm.len(), 12_000, "1.5 s at 8 kHz");
        assert_eq!(prompts.fetch(&url).await.unwrap(), pcm);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "second play from memory");
    }

    #[tokio::test]
    async fn bad_urls_fail_with_the_reason() {
        let prompts = Prompts::new(None, None, None);
        let fetch = async |response: Vec<u8>| {
            let (addr, _) = http_server(response).await;
            let url = url::Url::parse(&format!("http://{addr}/x.wav")).unwrap();
            prompts.fetch(&url).await.unwrap_err().to_string()
        };
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert!(fetch(not_found).await.contains("HTTP 404"));
        let redirect =
            b"HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nContent-Length: 0\r\n\r\n";
        assert!(fetch(redirect.to_vec()).await.contains("redirects are not followed"));
        assert!(fetch(ok(b"<html>not audio</html>")).await.contains("not a usable WAV"));
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_URL_BYTES + 1);
        assert!(fetch(huge.into_bytes()).await.contains("larger than 16 MiB"));
        // Nobody listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = url::Url::parse(&format!("http://{closed}/x.wav")).unwrap();
        assert!(matches!(prompts.fetch(&url).await, Err(PromptError::Fetch { .. })));
    }

    /// An engine that shares espeak-ng's cache key but refuses to render.
    #[derive(Debug)]
    struct Unrunnable;

    impl Tts for Unrunnable {
        fn render(&self, _: &str, _: Option<&str>) -> Result<Vec<i16>, String> {
            Err("not rendered: the cache should have answered".into())
        }
        fn id(&self) -> String {
            "espeak-ng".into()
        }
    }
}
