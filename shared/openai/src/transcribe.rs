//! Dictation: the OpenAI Audio API's `POST /audio/transcriptions`, a
//! `multipart/form-data` upload (`file`, `model`, `response_format=json`)
//! answered with `{"text": "…"}`. The body is encoded here by hand (reqwest is
//! built without its `multipart` feature) and sent through the crate's one
//! retry layer, so it gets the same key refresh, retries, timeouts and error
//! mapping as every other call.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use taskpilot_chatkit::dictation::{Transcriber, Transcript};
use taskpilot_chatkit::model::TokenUsage;
use taskpilot_http::UpstreamError;

use crate::{Call, OpenAi, Payload, unreadable};

/// The transcription model when `CHATKIT_TRANSCRIBE_MODEL` is unset.
pub const DEFAULT_TRANSCRIBE_MODEL: &str = "gpt-4o-mini-transcribe";

/// The audio types accepted, as (media type, upload file extension): what
/// browsers' `MediaRecorder` produces and the formats OpenAI transcribes.
const AUDIO_TYPES: &[(&str, &str)] = &[
    ("audio/webm", "webm"),
    ("audio/mp4", "mp4"),
    ("audio/m4a", "m4a"),
    ("audio/ogg", "ogg"),
    ("audio/mpeg", "mp3"),
    ("audio/mp3", "mp3"),
    ("audio/wav", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/flac", "flac"),
];

/// The longest media type echoed back in [`TranscribeError::UnsupportedType`].
const MAX_ECHOED_TYPE: usize = 100;

/// Why a transcription produced no text.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// The audio's media type is not one OpenAI transcribes (a client error).
    #[error(
        "unsupported audio type {0:?} (send audio/webm, audio/mp4, audio/ogg, audio/mpeg, audio/wav, audio/m4a or audio/flac)"
    )]
    UnsupportedType(String),
    /// No audio bytes were given (a client error; nothing is sent).
    #[error("the audio is empty")]
    EmptyAudio,
    /// OpenAI answered an empty text: no speech was heard (a client error).
    #[error("no speech was recognized in the audio")]
    NoSpeech,
    /// The call itself failed, mapped like every other OpenAI call.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The canonical (media type, upload file extension) of `mime`
/// (parameters such as `;codecs=opus` ignored, case-insensitive), or `None`
/// if OpenAI cannot transcribe it.
fn audio_type(mime: &str) -> Option<(&'static str, &'static str)> {
    let essence = mime.split_once(';').map_or(mime, |(essence, _)| essence);
    let essence = essence.trim();
    AUDIO_TYPES
        .iter()
        .copied()
        .find(|(known, _)| known.eq_ignore_ascii_case(essence))
}

/// The JSON answer (`response_format=json`); other fields are ignored.
#[derive(Deserialize)]
struct Transcription {
    text: String,
    #[serde(default)]
    usage: Option<serde_json::Value>,
}

/// Tokens of a `usage` of type `tokens`.
fn token_usage(usage: &serde_json::Value) -> Option<TokenUsage> {
    if usage["type"] != "tokens" {
        return None;
    }
    Some(TokenUsage {
        input: usage["input_tokens"].as_u64()?,
        cached_input: 0,
        output: usage["output_tokens"].as_u64().unwrap_or(0),
    })
}

impl OpenAi {
    /// Transcribes `audio` (of media type `mime`, e.g. `audio/webm;codecs=opus`)
    /// with `model` (e.g. [`DEFAULT_TRANSCRIBE_MODEL`]), finishing by
    /// `deadline` (capped at the configured timeout), and returns the text,
    /// trimmed, with the tokens it cost. An unsupported type or empty audio is refused before anything
    /// is sent; an empty text is [`TranscribeError::NoSpeech`].
    pub async fn transcribe(
        &self,
        audio: &[u8],
        mime: &str,
        model: &str,
        deadline: Instant,
    ) -> Result<Transcript, TranscribeError> {
        let (file_type, extension) = audio_type(mime).ok_or_else(|| {
            TranscribeError::UnsupportedType(mime.chars().take(MAX_ECHOED_TYPE).collect())
        })?;
        if audio.is_empty() {
            return Err(TranscribeError::EmptyAudio);
        }
        let file_name = format!("audio.{extension}");
        let parts = [
            Part::text("model", model),
            Part::text("response_format", "json"),
            Part {
                name: "file",
                file: Some((&file_name, file_type)),
                content: audio,
            },
        ];
        let boundary = boundary(&parts);
        let body = multipart(&boundary, &parts);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let call = Call {
            method: reqwest::Method::POST,
            path: "/audio/transcriptions",
            body: None,
            header: None,
            not_found: "the transcription API was not found (check OPENAI_BASE_URL and CHATKIT_TRANSCRIBE_MODEL)",
        };
        let payload = Payload::Encoded {
            content_type: &content_type,
            bytes: &body,
        };
        let answer = self.send_payload(&call, payload, deadline).await?;
        let Transcription { text, usage } =
            serde_json::from_value(answer).map_err(|_| unreadable())?;
        let text = text.trim();
        if text.is_empty() {
            return Err(TranscribeError::NoSpeech);
        }
        Ok(Transcript {
            text: text.to_owned(),
            usage: usage.as_ref().and_then(token_usage),
        })
    }
}

/// Dictation for the ChatKit engine: this client and the transcription model
/// (`CHATKIT_TRANSCRIBE_MODEL`).
pub struct Dictation {
    /// The client (sharing the assistant's key cache).
    pub openai: OpenAi,
    /// The model.
    pub model: String,
}

impl Transcriber for Dictation {
    type Error = TranscribeError;

    fn check_type(&self, mime: &str) -> Result<(), TranscribeError> {
        match audio_type(mime) {
            Some(_) => Ok(()),
            None => Err(TranscribeError::UnsupportedType(
                mime.chars().take(MAX_ECHOED_TYPE).collect(),
            )),
        }
    }

    async fn transcribe(
        &self,
        audio: &[u8],
        mime: &str,
        deadline: Instant,
    ) -> Result<Transcript, TranscribeError> {
        self.openai
            .transcribe(audio, mime, &self.model, deadline)
            .await
    }
}

/// One part of a `multipart/form-data` body.
struct Part<'a> {
    name: &'a str,
    /// `(file name, content type)` for a file part.
    file: Option<(&'a str, &'a str)>,
    content: &'a [u8],
}

impl<'a> Part<'a> {
    fn text(name: &'a str, value: &'a str) -> Self {
        Self {
            name,
            file: None,
            content: value.as_bytes(),
        }
    }
}

/// `parts` as a `multipart/form-data` body (RFC 7578) delimited by
/// `boundary`, which must not occur in any part.
fn multipart(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let size = parts.iter().map(|p| p.content.len() + 160).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let head = match part.file {
            Some((file_name, content_type)) => format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{file_name}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n",
                part.name
            ),
            None => format!(
                "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                part.name
            ),
        };
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(part.content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// A random boundary that occurs in none of `parts`' contents.
fn boundary(parts: &[Part<'_>]) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let keys = RandomState::new();
    let mut drawn = 0u64;
    pick_boundary(parts, || {
        let mut hasher = keys.build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(drawn);
        drawn += 1;
        hasher.finish()
    })
}

/// The first boundary made of two `draw`s that occurs in none of `parts`.
fn pick_boundary(parts: &[Part<'_>], mut draw: impl FnMut() -> u64) -> String {
    loop {
        let candidate = format!("taskpilot-{:016x}{:016x}", draw(), draw());
        if !parts
            .iter()
            .any(|p| contains(p.content, candidate.as_bytes()))
        {
            return candidate;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio_extension(mime: &str) -> Option<&'static str> {
        audio_type(mime).map(|(_, extension)| extension)
    }

    #[test]
    fn token_usage_is_read_from_a_tokens_usage_only() {
        let tokens = serde_json::json!({"type": "tokens", "input_tokens": 14,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
            "output_tokens": 45, "total_tokens": 59});
        assert_eq!(
            token_usage(&tokens),
            Some(TokenUsage {
                input: 14,
                cached_input: 0,
                output: 45
            })
        );
        let duration = serde_json::json!({"type": "duration", "seconds": 3});
        assert_eq!(token_usage(&duration), None);
        assert_eq!(token_usage(&serde_json::json!({"type": "tokens"})), None);
    }

    #[test]
    fn composer_types_map_to_their_extension() {
        assert_eq!(audio_extension("audio/webm;codecs=opus"), Some("webm"));
        assert_eq!(audio_extension("audio/mp4"), Some("mp4"));
        assert_eq!(audio_extension("audio/ogg;codecs=opus"), Some("ogg"));
        assert_eq!(audio_extension("audio/ogg; codecs=\"opus\""), Some("ogg"));
    }

    #[test]
    fn openai_formats_map_to_their_extension() {
        for (mime, extension) in [
            ("audio/mpeg", "mp3"),
            ("audio/mp3", "mp3"),
            ("audio/wav", "wav"),
            ("audio/x-wav", "wav"),
            ("audio/m4a", "m4a"),
            ("audio/flac", "flac"),
        ] {
            assert_eq!(audio_extension(mime), Some(extension), "{mime}");
        }
    }

    #[test]
    fn the_mapping_ignores_case_and_spaces() {
        assert_eq!(audio_extension("Audio/WebM;Codecs=Opus"), Some("webm"));
        assert_eq!(audio_extension(" audio/MP4 "), Some("mp4"));
        assert_eq!(
            audio_type("AUDIO/X-WAV;rate=16000"),
            Some(("audio/x-wav", "wav"))
        );
    }

    #[test]
    fn other_types_are_unsupported() {
        for mime in [
            "",
            "audio",
            "audio/",
            "audio/aac",
            "video/webm",
            "text/plain",
            "application/octet-stream",
            "audio/webmx",
            ";codecs=opus",
        ] {
            assert_eq!(audio_extension(mime), None, "{mime:?}");
        }
    }

    #[test]
    fn the_body_is_multipart_form_data() {
        let parts = [
            Part::text("model", "gpt-4o-mini-transcribe"),
            Part::text("response_format", "json"),
            Part {
                name: "file",
                file: Some(("audio.webm", "audio/webm")),
                content: b"\x1aE\xdf\xa3\r\nbytes",
            },
        ];
        let body = multipart("B0UND", &parts);
        assert_eq!(
            body,
            b"--B0UND\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
              gpt-4o-mini-transcribe\r\n\
              --B0UND\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\n\
              json\r\n\
              --B0UND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.webm\"\r\n\
              Content-Type: audio/webm\r\n\r\n\
              \x1aE\xdf\xa3\r\nbytes\r\n\
              --B0UND--\r\n"
                .to_vec()
        );
    }

    #[test]
    fn the_boundary_is_random() {
        let parts = [Part::text("model", "m")];
        let (a, b) = (boundary(&parts), boundary(&parts));
        assert_ne!(a, b);
        assert!(a.starts_with("taskpilot-") && a.len() == 42, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    }

    #[test]
    fn a_boundary_found_in_the_audio_is_drawn_again() {
        let audio = b"..taskpilot-00000000000000000000000000000001..";
        let parts = [Part {
            name: "file",
            file: Some(("audio.wav", "audio/wav")),
            content: audio,
        }];
        let mut n = 0;
        let picked = pick_boundary(&parts, || {
            n += 1;
            n - 1
        });
        assert_eq!(picked, "taskpilot-00000000000000020000000000000003");
    }
}
