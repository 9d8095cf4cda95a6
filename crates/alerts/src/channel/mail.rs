//! Mail through an SMTP server, one connection per message: alerts are few,
//! and a fresh connection cannot be a stale one.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{ChannelError, DeliveryError, Mail, MailTls};
use crate::message::Rendered;

pub(crate) struct MailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// A mail address as lettre takes it (`someone@example.com`, or `Name
/// <someone@example.com>`); the configuration checks its addresses with this too.
pub fn parse_address(address: &str) -> Result<Mailbox, ChannelError> {
    address.parse().map_err(|e: lettre::address::AddressError| ChannelError::Address {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

impl MailSender {
    /// `timeout` bounds the whole delivery: lettre's own timeout bounds only
    /// the connect, and a server that then says nothing would hold it forever.
    pub(crate) fn new(mail: &Mail, timeout: Duration) -> Result<MailSender, ChannelError> {
        let from = parse_address(&mail.from)?;
        let to = mail.to.iter().map(|address| parse_address(address)).collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(ChannelError::NoRecipient);
        }
        let tls_parameters =
            || TlsParameters::new(mail.host.clone()).map_err(|e| ChannelError::Tls(e.to_string()));
        let tls = match mail.tls {
            // Required: a server (or a man in the middle) that offers no
            // STARTTLS gets no login and no message.
            MailTls::Starttls => Tls::Required(tls_parameters()?),
            MailTls::Tls => Tls::Wrapper(tls_parameters()?),
            MailTls::None => Tls::None,
        };
        // "Dangerous" only in that the port and TLS are ours to choose.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.as_str())
            .port(mail.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some((user, password)) = &mail.login {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(MailSender { transport: builder.build(), timeout, from, to })
    }

    pub(crate) async fn send(&self, rendered: &Rendered) -> Result<(), DeliveryError> {
        let mut message = Message::builder().from(self.from.clone()).subject(rendered.subject.as_str());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.text.clone())
            .map_err(|e| DeliveryError::Message(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_elapsed) => Err(DeliveryError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_timeout() => Err(DeliveryError::Timeout),
            Ok(Err(e)) => Err(DeliveryError::Smtp {
                code: e.status().map(|code| code.to_string()),
                message: e.to_string(),
            }),
        }
    }
}
