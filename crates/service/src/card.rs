//! One Sign under the PIN rule, shared by the signer and the commands that
//! sign on demand (`sign`, `doctor`).
//!
//! The card locks after a few wrong PINs, and a Sign that gets no answer may
//! have been checked by the card. So while the PIN is not proven on the card
//! (no signature made with it has verified since this process connected):
//! - a durable "PIN in flight" mark is committed before the Sign is sent and
//!   cleared by the card's answer; a process that dies in between leaves it,
//!   and the next start of the service pauses signing;
//! - a Sign without an answer pauses signing, as a refusal does.
//!
//! Once proven, a Sign without an answer is an outage like any other.

use customs179_eport::{CardSession, CardSignature, FailureClass, SignerError};
use customs179_store::Store;

use crate::context::now_ms;

/// The holder of the "PIN in flight" mark of the service's instance
/// `instance` on `card`: one mark per card, as each card has its own PIN and
/// its own count of wrong ones.
pub fn service_holder(instance: &str, card: &str) -> String {
    format!("the service (instance {instance}, card {card})")
}

/// What one Sign came to.
#[derive(Debug)]
pub struct Attempt {
    pub result: Result<CardSignature, SignerError>,
    /// Whether the PIN was proven on the card when the Sign was sent.
    pub pin_proven: bool,
    /// Set when this outcome pauses signing. The mark, if one was written,
    /// is left in place: the caller persists the pause, then clears it with
    /// [`Store::clear_pin_in_flight`], so that a pause is never lost between.
    pub pause: Option<String>,
}

/// Signs `text` once with the card `card` held by `session`, under the PIN
/// rule. `holder` names the mark (the service, or a command).
pub async fn sign(
    session: CardSession<'_>,
    store: &Store,
    holder: &str,
    card: &str,
    text: &str,
    pin: &str,
) -> Attempt {
    let pin_proven = session.pin_proven();
    let Some(cert_no) = session.identity().map(|identity| identity.cert_no.to_string()) else {
        let result = Err(SignerError::Unavailable("not connected".into()));
        return Attempt { result, pin_proven, pause: None };
    };
    if !pin_proven {
        // Nothing carrying the PIN is sent unless the mark is committed.
        let refused = match store.mark_pin_in_flight(holder, card, &cert_no, now_ms()).await {
            Ok(true) => None,
            Ok(false) => Some("another instance drives the card now".to_owned()),
            Err(e) => Some(format!("cannot commit the PIN-in-flight mark: {e}")),
        };
        if let Some(why) = refused {
            return Attempt { result: Err(SignerError::Unavailable(why)), pin_proven, pause: None };
        }
    }
    let result = session.sign(text, pin).await;
    let pause = match &result {
        Err(SignerError::Failed { class: FailureClass::Refused, message }) => {
            Some(format!("the card refused: {message} (a wrong PIN, a missing or locked card?)"))
        }
        Err(SignerError::Certificate(message)) => {
            Some(format!("the card's certificate is unusable: {message}"))
        }
        Err(SignerError::NoAnswer(reason)) if !pin_proven => Some(format!(
            "a Sign carrying an unproven PIN got no answer ({reason}): the card may have counted a wrong PIN. \
             Check the card's pin and the card, then resume its signing"
        )),
        _ => None,
    };
    if pause.is_none()
        && !pin_proven
        && let Err(e) = store.clear_pin_in_flight(holder).await
    {
        // Left behind, the mark pauses signing at the next start: safe, if needless.
        tracing::error!(error = %e, "signer: cannot clear the PIN-in-flight mark");
    }
    Attempt { result, pin_proven, pause }
}
