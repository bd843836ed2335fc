//! `listen` and `speak` (flow 0.2.0's `speech`) on a SIP call: the caller's audio is tapped
//! from the media leg, endpointed frame by frame ([`Endpointer`]), and streamed to a
//! recognizer from just before the speech began; `speak` plays a prompt while doing the same,
//! and on barge-in stops it and asks the leg how much was sent, which is what the caller heard.

use tokio::time::Instant;
use voxide_media::vad::{Endpoint, EndpointOptions, Endpointer, FRAME};
use voxide_speech::{Grammar, SpeechError};

use super::*;
use crate::call::{ListenOptions, SpeakOptions, Spoken, Utterance, Word};
use crate::speech::{Decoding, SpeechEngine, heard_text};

/// Audio kept from before an utterance counted as begun, so its first sounds are recognised.
const PREROLL_MS: u64 = 300;
/// Frames the tap may queue for the call's task before it sheds (a slow task, not the norm).
const TAP_FRAMES: usize = 64;
const FRAME_MS: u64 = (FRAME as u64) * 1000 / prompts::RATE as u64;

/// One turn of the caller: endpointing, the pre-roll, and the utterance's decoding.
struct Turn {
    endpointer: Endpointer,
    /// Audio seen so far, in ms.
    ms: u64,
    preroll: VecDeque<(u64, Vec<i16>)>,
    keep: usize,
    decoding: Decoding,
    /// Where the audio fed to the recognizer starts, once the utterance began.
    fed_from: Option<u64>,
}

impl Turn {
    /// Starts a turn: the recognizer is taken and given the hints now, so a bad hint fails
    /// before anyone speaks. `no_input: None` waits for speech for ever (a `speak`).
    async fn start(
        engine: &Arc<SpeechEngine>,
        opts: &ListenOptions,
        no_input: Option<u32>,
    ) -> CallResult<Turn> {
        let grammar = if opts.hints.is_empty() {
            None
        } else {
            Some(
                Grammar::from_hints(&opts.hints)
                    .map_err(|e| CallError::InvalidArgument(format!("hints: {e}")))?,
            )
        };
        let ms = |ms: u32| Duration::from_millis(u64::from(ms));
        let endpoint = EndpointOptions {
            no_input: ms(no_input.unwrap_or(u32::MAX)),
            min_speech: ms(opts.min_speech_ms),
            end_silence: ms(opts.end_silence_ms),
            max_utterance: ms(opts.max_ms),
        };
        let frames =
            (u64::from(opts.max_ms) + PREROLL_MS + u64::from(opts.end_silence_ms)) / FRAME_MS + 16;
        let mut decoding = engine.decode(grammar, frames as usize);
        decoding.ready().await.map_err(recognition_error)?;
        Ok(Turn {
            endpointer: Endpointer::new(endpoint),
            ms: 0,
            preroll: VecDeque::new(),
            keep: ((u64::from(opts.min_speech_ms) + PREROLL_MS) / FRAME_MS + 2) as usize,
            decoding,
            fed_from: None,
        })
    }

    /// One 20 ms frame of the caller's audio.
    fn push(&mut self, frame: Vec<i16>) -> Option<Endpoint> {
        let at = self.ms;
        self.ms += FRAME_MS;
        let event = self.endpointer.push(&frame);
        if self.fed_from.is_some() {
            self.decoding.feed(frame);
            return event;
        }
        self.preroll.push_back((at, frame));
        if self.preroll.len() > self.keep {
            self.preroll.pop_front();
        }
        if let Some(Endpoint::Started { at_ms }) = event {
            let from = at_ms.saturating_sub(PREROLL_MS);
            for (start, frame) in self.preroll.drain(..) {
                if start >= from {
                    self.fed_from.get_or_insert(start);
                    self.decoding.feed(frame);
                }
            }
        }
        event
    }

    /// What was said between `start_ms` and `end_ms` (ms since the turn began).
    async fn recognise(self, start_ms: u64, end_ms: u64) -> CallResult<Utterance> {
        let fed_from = self.fed_from.unwrap_or(start_ms);
        let heard = self.decoding.finish().await.map_err(recognition_error)?;
        let at = |ms: u32| u32::try_from(fed_from + u64::from(ms)).unwrap_or(u32::MAX);
        Ok(Utterance {
            text: heard.text,
            confidence: heard.confidence,
            start_ms: u32::try_from(start_ms).unwrap_or(u32::MAX),
            end_ms: u32::try_from(end_ms).unwrap_or(u32::MAX),
            words: heard
                .words
                .into_iter()
                .map(|w| Word { text: w.text, start_ms: at(w.start_ms), end_ms: at(w.end_ms) })
                .collect(),
            digits: String::new(),
        })
    }
}

fn recognition_error(e: SpeechError) -> CallError {
    match e {
        SpeechError::Grammar(e) => CallError::InvalidArgument(format!("hints: {e}")),
        e => CallError::Failed(format!("speech recognition: {e}")),
    }
}

fn ms_since(t: Instant) -> u32 {
    u32::try_from(t.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Taps `session`'s received audio.
fn tap(session: &Session) -> mpsc::Receiver<Vec<i16>> {
    let (tx, rx) = mpsc::channel(TAP_FRAMES);
    session.tap(Some(tx));
    rx
}

async fn next_frame(frames: &mut Option<mpsc::Receiver<Vec<i16>>>) -> Option<Vec<i16>> {
    match frames {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl SipCall {
    /// The node's recognizer, or a `failed` saying why there is none.
    fn speech_engine(&self, verb: &str) -> CallResult<Arc<SpeechEngine>> {
        match self.media.as_ref().map(|m| &m.speech) {
            Some(Ok(engine)) => Ok(engine.clone()),
            Some(Err(why)) => Err(CallError::Failed(format!("{verb}: {why}"))),
            None => Err(Self::unavailable(verb)),
        }
    }

    /// The keys waiting, as the turn they ended.
    fn key_turn(&mut self, at_ms: u32) -> Utterance {
        Utterance {
            digits: self.dtmf.drain(..).collect(),
            start_ms: at_ms,
            end_ms: at_ms,
            ..Utterance::default()
        }
    }

    /// What the caller said, on the call's event stream.
    fn heard(&self, verb: &str, u: &Utterance) {
        // What callers say is theirs: in the call's events, not in the log at info.
        tracing::debug!(call = self.call.0, text = %u.text, confidence = u.confidence, "{verb}: heard");
        if let Some(live) = &self.live {
            live.event(
                "call.speech",
                serde_json::json!({
                    "verb": verb,
                    "text": u.text,
                    "confidence": u.confidence,
                    "start_ms": u.start_ms,
                    "end_ms": u.end_ms,
                }),
            );
        }
    }

    pub(super) async fn listen_turn(
        &mut self,
        opts: ListenOptions,
    ) -> CallResult<Option<Utterance>> {
        self.live()?;
        self.ensure_media().await?;
        let began = Instant::now();
        if !self.dtmf.is_empty() {
            return Ok(Some(self.key_turn(0)));
        }
        let engine = self.speech_engine("listen")?;
        let Some(session) = self.session.as_ref() else { return Err(Self::unavailable("listen")) };
        // Tapped before the recognizer is ready (taking one may load the model), so a caller
        // who starts speaking meanwhile is heard from the start: the tap holds the frames.
        let mut frames = Some(tap(session));
        let mut turn = match Turn::start(&engine, &opts, Some(opts.no_input_ms)).await {
            Ok(turn) => turn,
            Err(e) => {
                session.tap(None);
                return Err(e);
            }
        };
        let mut session = self.session.take();
        /// How the turn ended.
        enum End {
            NoInput,
            Keys,
            Said(u64, u64),
        }
        let result = loop {
            tokio::select! {
                frame = next_frame(&mut frames) => match frame {
                    Some(frame) => match turn.push(frame) {
                        Some(Endpoint::NoInput) => break Ok(End::NoInput),
                        Some(Endpoint::Ended { start_ms, end_ms, .. }) => {
                            break Ok(End::Said(start_ms, end_ms));
                        }
                        Some(Endpoint::Started { .. }) | None => {}
                    },
                    // The leg stopped tapping (it ended): `next_event` reports it.
                    None => frames = None,
                },
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => return Err(CallError::Hangup),
                    Wake::Digit => break Ok(End::Keys),
                    Wake::Signal => {}
                },
            }
        };
        if let Some(s) = &session {
            s.tap(None);
        }
        self.session = session;
        self.apply_pending_answer();
        let (start_ms, end_ms) = match result? {
            End::NoInput => return Ok(None),
            End::Keys => return Ok(Some(self.key_turn(ms_since(began)))),
            End::Said(start_ms, end_ms) => (start_ms, end_ms),
        };
        let utterance = turn.recognise(start_ms, end_ms).await?;
        self.heard("listen", &utterance);
        Ok(Some(utterance))
    }

    pub(super) async fn speak_text(
        &mut self,
        text: String,
        opts: SpeakOptions,
    ) -> CallResult<Spoken> {
        let pcm = self.speech(&text, opts.voice.as_deref()).await?;
        self.ensure_media().await?;
        let (by_dtmf, by_speech) = (opts.interruptible.by_dtmf(), opts.interruptible.by_speech());
        let spoken = |sent: usize, interruption| Spoken {
            completed: sent >= pcm.len(),
            heard_text: heard_text(&text, &pcm, sent),
            heard_ms: u32::try_from(sent as u64 * 1000 / u64::from(prompts::RATE))
                .unwrap_or(u32::MAX),
            interruption,
        };
        if by_dtmf && !self.dtmf.is_empty() {
            let keys = self.key_turn(0);
            return Ok(spoken(0, Some(keys)));
        }
        // A prompt the API played into the call finishes first.
        if let Some(injected) = self.live.as_ref().and_then(|l| l.take_injected()) {
            let _ = injected.await;
        }
        let began = Instant::now();
        if self.session.is_none() {
            // Signalling only: the prompt's time passes in silence.
            let keyed = self.play_pcm(pcm.clone(), by_dtmf).await?;
            let sent = (u64::from(ms_since(began)) * u64::from(prompts::RATE) / 1000) as usize;
            let keys = keyed.then(|| self.key_turn(ms_since(began)));
            return Ok(spoken(if keyed { sent.min(pcm.len()) } else { pcm.len() }, keys));
        }
        let mut turn = match by_speech {
            true => Some(Turn::start(&self.speech_engine("speak")?, &opts.listen, None).await?),
            false => None,
        };
        let Some(session) = self.session.take() else { return Err(Self::unavailable("speak")) };
        // Tapped as the prompt starts: barge-in is speech over it.
        let mut frames = turn.as_ref().map(|_| tap(&session));
        let mut done = session.play(pcm.clone());
        let mut session = Some(session);
        let mut sent: Option<usize> = None;
        // Stops the prompt and says how much of it went out.
        async fn stop(session: &Option<Session>, whole: usize) -> usize {
            match session.as_ref().map(|s| s.stop_play_at()) {
                Some(at) => at.await.ok().flatten().unwrap_or(whole),
                None => 0,
            }
        }
        let result = loop {
            tokio::select! {
                _ = &mut done, if sent.is_none() => break Ok(None),
                frame = next_frame(&mut frames) => match frame {
                    Some(frame) => match turn.as_mut().and_then(|t| t.push(frame)) {
                        Some(Endpoint::Started { .. }) if sent.is_none() => {
                            sent = Some(stop(&session, pcm.len()).await);
                        }
                        Some(Endpoint::Ended { start_ms, end_ms, .. }) => {
                            break Ok(Some((start_ms, end_ms)));
                        }
                        _ => {}
                    },
                    None => frames = None,
                },
                wake = self.next_event(&mut session) => match wake {
                    Wake::Gone => break Err(CallError::Hangup),
                    Wake::MediaLost => return Err(CallError::Hangup),
                    Wake::Digit if by_dtmf && sent.is_none() => {
                        sent = Some(stop(&session, pcm.len()).await);
                        break Ok(None);
                    }
                    Wake::Digit | Wake::Signal => {}
                },
            }
        };
        if let Some(s) = &session {
            s.tap(None);
            if sent.is_none() {
                s.stop_play();
            }
        }
        self.session = session;
        self.apply_pending_answer();
        let said = result?;
        let Some(sent) = sent else { return Ok(spoken(pcm.len(), None)) };
        let interruption = match (said, turn) {
            (Some((start_ms, end_ms)), Some(turn)) => {
                let utterance = turn.recognise(start_ms, end_ms).await?;
                self.heard("speak", &utterance);
                utterance
            }
            _ => self.key_turn(ms_since(began)),
        };
        let result = spoken(sent, Some(interruption));
        tracing::info!(
            call = self.call.0,
            heard_ms = result.heard_ms,
            heard = %result.heard_text,
            "speak: interrupted"
        );
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Option<Arc<SpeechEngine>> {
        match SpeechEngine::debian_en_us() {
            Ok(engine) => Some(engine),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{e} (scripts/test.sh installs it)")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    #[tokio::test]
    async fn a_hint_word_the_recognizer_does_not_know_is_an_invalid_argument_naming_it() {
        let Some(engine) = engine() else { return };
        let opts =
            ListenOptions { hints: vec!["yes".into(), "frobnicate".into()], ..Default::default() };
        match Turn::start(&engine, &opts, Some(1000)).await {
            Err(CallError::InvalidArgument(why)) => assert!(why.contains("frobnicate"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an unknown word was accepted"),
        }
        // The recognizer went back to the pool and takes a good grammar next.
        let opts = ListenOptions { hints: vec!["yes".into()], ..Default::default() };
        assert!(Turn::start(&engine, &opts, Some(1000)).await.is_ok());
    }

    #[tokio::test]
    async fn a_turn_feeds_the_recognizer_from_just_before_the_speech_began() {
        let Some(engine) = engine() else { return };
        let opts = ListenOptions { hints: vec!["<digits>".into()], ..Default::default() };
        let mut turn = Turn::start(&engine, &opts, Some(5000)).await.unwrap();
        // 1 s of silence, 600 ms of a loud tone, silence: started once min-speech passed,
        // fed from 300 ms before the speech.
        let tone = |i: usize| ((i as f64 * 0.3).sin() * 8000.0) as i16;
        let mut events = Vec::new();
        for n in 0..150usize {
            let loud = (50..80).contains(&n);
            let frame: Vec<i16> =
                (0..FRAME).map(|i| if loud { tone(n * FRAME + i) } else { 0 }).collect();
            events.extend(turn.push(frame));
        }
        let Some(Endpoint::Started { at_ms }) = events.first().copied() else {
            panic!("{events:?}")
        };
        assert!((1000..=1060).contains(&at_ms), "{events:?}");
        assert_eq!(turn.fed_from, Some(at_ms - PREROLL_MS), "{events:?}");
        assert!(matches!(events.get(1), Some(Endpoint::Ended { .. })), "{events:?}");
    }
}
