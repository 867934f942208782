//! Dictation, the reference SDK's `transcribe` hook: the composer's recorded
//! audio in, its text out. The engine checks the request (the audio's type,
//! its base64, its size) and admits it; a [`Transcriber`] adapter (OpenAI's
//! Audio API in `taskpilot-openai`) does the work.

use std::future::Future;
use std::time::Instant;

use crate::model::TokenUsage;

/// Most audio one dictation may carry, decoded.
pub const MAX_AUDIO_BYTES: usize = 4 * 1024 * 1024;

/// A transcription: the text, and its tokens when the model bills by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// What was said, trimmed.
    pub text: String,
    /// Input (audio) plus output (text) tokens, as reported.
    pub usage: Option<TokenUsage>,
}

/// Turns audio into text.
pub trait Transcriber: Send + Sync {
    /// Why a transcription failed (its type, or the service's answer).
    type Error: std::fmt::Display + Send;

    /// Whether dictation is offered at all.
    fn enabled(&self) -> bool {
        true
    }

    /// Refuses a media type it cannot transcribe, before anything is sent or
    /// counted.
    fn check_type(&self, mime: &str) -> Result<(), Self::Error>;

    /// The text of `audio` (of media type `mime`), by `deadline`.
    fn transcribe(
        &self,
        audio: &[u8],
        mime: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Transcript, Self::Error>> + Send;
}

/// Why a dictation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DictationError<E> {
    /// `params.audio_base64` is not base64.
    #[error("params.audio_base64: not base64 ({0})")]
    NotBase64(String),
    /// Over [`MAX_AUDIO_BYTES`] once decoded.
    #[error("a dictation is at most {} MB of audio", MAX_AUDIO_BYTES / (1024 * 1024))]
    TooLarge,
    /// The transcriber refused the audio or failed.
    #[error(transparent)]
    Transcriber(E),
}

/// No dictation: `input.transcribe` answers that it is not offered.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDictation;

/// The error of [`NoDictation`] (never produced: the engine asks
/// [`Transcriber::enabled`] first).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("dictation is not enabled on this server")]
pub struct DictationOff;

impl Transcriber for NoDictation {
    type Error = DictationOff;

    fn enabled(&self) -> bool {
        false
    }

    fn check_type(&self, _mime: &str) -> Result<(), DictationOff> {
        Err(DictationOff)
    }

    async fn transcribe(
        &self,
        _audio: &[u8],
        _mime: &str,
        _deadline: Instant,
    ) -> Result<Transcript, DictationOff> {
        Err(DictationOff)
    }
}

/// The audio of `audio_base64`, decoded and bounded.
pub fn decoded<E>(audio_base64: &str) -> Result<Vec<u8>, DictationError<E>> {
    use base64::Engine as _;
    let audio = base64::engine::general_purpose::STANDARD
        .decode(audio_base64.trim())
        .map_err(|e| DictationError::NotBase64(e.to_string()))?;
    if audio.len() > MAX_AUDIO_BYTES {
        return Err(DictationError::TooLarge);
    }
    Ok(audio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_decoded_trimmed_and_bounded() {
        assert_eq!(decoded::<()>(" AAEC\n").unwrap(), [0, 1, 2]);
        assert!(matches!(
            decoded::<()>("not base64!"),
            Err(DictationError::NotBase64(_))
        ));
        use base64::Engine as _;
        let at_limit = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_AUDIO_BYTES]);
        assert_eq!(decoded::<()>(&at_limit).unwrap().len(), MAX_AUDIO_BYTES);
        let over = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_AUDIO_BYTES + 1]);
        assert!(matches!(
            decoded::<()>(&over),
            Err(DictationError::TooLarge)
        ));
    }

    #[test]
    fn without_dictation_every_type_is_refused() {
        assert!(!NoDictation.enabled());
        assert!(NoDictation.check_type("audio/webm").is_err());
    }
}
