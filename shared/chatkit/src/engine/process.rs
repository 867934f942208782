//! The one entry point, the reference SDK's `ChatKitServer.process`: a parsed
//! request and its caller in, a JSON answer or a stream to run out. The
//! caller's side (its session, its budget) is asked through the [`Gate`] at
//! the moment each kind of request needs it: before a JSON operation, while
//! a streamed request's thread is read, before a dictation.

use std::future::Future;
use std::time::Instant;

use crate::attachments::AttachmentStore;
use crate::context::Caller;
use crate::dictation::{self, DictationError, Transcriber};
use crate::model::TokenUsage;
use crate::request::Request;
use crate::responder::Responder;
use crate::sink::EventSink;
use crate::store::ChatStore;
use crate::turn::{Meter, Spent};

use super::{Answer, ChatError, Engine, Prepared};

/// What a request needs from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// It is answered with a stream.
    pub stream: bool,
    /// It reaches the model (a turn the budget counts).
    pub turn: bool,
}

impl Need {
    /// What `request` needs.
    pub fn of(request: &Request) -> Self {
        Self {
            stream: request.is_streaming(),
            turn: request.asks_model(),
        }
    }
}

/// The caller's side of a request: its session, its budget, what the model
/// costs it.
pub trait Gate: Send + Sync {
    /// An admitted turn.
    type Ticket: Send;
    /// Why a request is refused.
    type Error: Send;

    /// Lets a request with `need` through; a turn is admitted and its ticket
    /// returned. A refusal leaves nothing admitted.
    fn admit(
        &self,
        need: Need,
    ) -> impl Future<Output = Result<Option<Self::Ticket>, Self::Error>> + Send;

    /// The meter a run charges an admitted turn's model rounds to.
    fn meter(&self, ticket: &Self::Ticket) -> Meter;

    /// Gives back an admitted turn that will not reach the model.
    fn give_back(&self, ticket: Self::Ticket) -> impl Future<Output = ()> + Send;

    /// Charges what a dictation cost to its turn.
    fn charge(&self, ticket: Self::Ticket, tokens: TokenUsage) -> impl Future<Output = ()> + Send;
}

/// Lets everything through and counts nothing (tools, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

impl Gate for OpenGate {
    type Ticket = std::convert::Infallible;
    type Error = std::convert::Infallible;

    async fn admit(&self, _need: Need) -> Result<Option<Self::Ticket>, Self::Error> {
        Ok(None)
    }

    fn meter(&self, ticket: &Self::Ticket) -> Meter {
        match *ticket {}
    }

    async fn give_back(&self, ticket: Self::Ticket) {
        match ticket {}
    }

    async fn charge(&self, ticket: Self::Ticket, _tokens: TokenUsage) {
        match ticket {}
    }
}

/// Why `process` gave no result (each an HTTP error, before any event).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<G, D> {
    /// The engine refused the request.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The gate refused it.
    #[error("refused by the gate")]
    Refused(G),
    /// A dictation was refused or failed.
    #[error(transparent)]
    Dictation(DictationError<D>),
}

/// What `process` answers (the reference SDK's `NonStreamingResult |
/// StreamingResult`).
pub enum Outcome<'e, S, R, A, D> {
    /// A whole JSON answer.
    Json(Answer),
    /// A stream, checked and admitted, to run.
    Stream(Box<Streaming<'e, S, R, A, D>>),
}

/// A streamed request ready to run.
pub struct Streaming<'e, S, R, A, D> {
    engine: &'e Engine<S, R, A, D>,
    caller: Caller,
    prepared: Prepared,
    deadline: Instant,
}

impl<S: ChatStore, R: Responder, A: AttachmentStore, D: Transcriber> Streaming<'_, S, R, A, D> {
    /// Who asked.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether running it asks the model.
    pub fn reaches_model(&self) -> bool {
        self.prepared.reaches_model()
    }

    /// Runs it, streaming its events into `sink`; says what the model cost.
    pub async fn run<K: EventSink>(self, sink: &mut K) -> Spent {
        self.engine
            .run(&self.caller, self.prepared, sink, self.deadline)
            .await
    }
}

type Processed<'e, S, R, A, D, G> =
    Result<Outcome<'e, S, R, A, D>, ProcessError<<G as Gate>::Error, <D as Transcriber>::Error>>;

impl<S: ChatStore, R: Responder, A: AttachmentStore, D: Transcriber> Engine<S, R, A, D> {
    /// Answers one request of `caller`, asking `gate` what the request needs
    /// from the caller's side; a stream must end by `deadline`.
    pub async fn process<G: Gate>(
        &self,
        caller: Caller,
        request: Request,
        gate: &G,
        deadline: Instant,
    ) -> Processed<'_, S, R, A, D, G> {
        let need = Need::of(&request);
        match request {
            Request::Transcribe {
                audio_base64,
                mime_type,
            } => {
                let answer = self
                    .dictate(&audio_base64, &mime_type, gate, deadline)
                    .await?;
                Ok(Outcome::Json(answer))
            }
            request if need.stream => {
                let (admitted, prepared) =
                    futures_util::join!(gate.admit(need), self.prepare(&caller.user, request));
                let ticket = admitted.map_err(ProcessError::Refused)?;
                // Nothing is written until the gate has let the request in.
                let committed = match prepared {
                    Ok(p) => self.commit(&caller.user, &p).await.map(|()| p),
                    Err(e) => Err(e),
                };
                let prepared = match (committed, ticket) {
                    (Err(e), Some(ticket)) => {
                        gate.give_back(ticket).await;
                        return Err(e.into());
                    }
                    (Err(e), None) => return Err(e.into()),
                    (Ok(p), Some(ticket)) if p.reaches_model() => p.metered(gate.meter(&ticket)),
                    (Ok(p), Some(ticket)) => {
                        gate.give_back(ticket).await;
                        p
                    }
                    (Ok(p), None) => p,
                };
                Ok(Outcome::Stream(Box::new(Streaming {
                    engine: self,
                    caller,
                    prepared,
                    deadline,
                })))
            }
            request => {
                if let Some(ticket) = gate.admit(need).await.map_err(ProcessError::Refused)? {
                    gate.give_back(ticket).await;
                }
                Ok(Outcome::Json(self.json(&caller.user, request).await?))
            }
        }
    }

    /// `input.transcribe`: the audio is checked before it is admitted (bad
    /// audio costs no turn); what the transcription cost is charged to it.
    async fn dictate<G: Gate>(
        &self,
        audio_base64: &str,
        mime_type: &str,
        gate: &G,
        deadline: Instant,
    ) -> Result<Answer, ProcessError<G::Error, D::Error>> {
        if !self.dictation.enabled() {
            return Err(ChatError::DictationDisabled.into());
        }
        let refused = |e| ProcessError::Dictation(DictationError::Transcriber(e));
        self.dictation.check_type(mime_type).map_err(refused)?;
        let audio = dictation::decoded(audio_base64).map_err(ProcessError::Dictation)?;
        let need = Need {
            stream: false,
            turn: true,
        };
        let ticket = gate.admit(need).await.map_err(ProcessError::Refused)?;
        let transcript = self
            .dictation
            .transcribe(&audio, mime_type, deadline)
            .await
            .map_err(refused)?;
        if let (Some(ticket), Some(tokens)) = (ticket, transcript.usage) {
            gate.charge(ticket, tokens).await;
        }
        tracing::info!(
            audio_bytes = audio.len(),
            chars = transcript.text.chars().count(),
            "dictation transcribed"
        );
        Ok(Answer::Transcript {
            text: transcript.text,
        })
    }
}
