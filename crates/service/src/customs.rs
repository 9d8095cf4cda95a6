//! The upload client: posts `payExInfoStr` to customs (spec 1.2).

use std::time::Duration;

use customs179_core::{AnswerClass, classify};

/// What customs said to one upload, or why it could not be asked.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub class: AnswerClass,
    /// customs' code, `HTTP <status>` without one, or `transport` without an answer; a metrics label.
    pub code: String,
    /// What to keep in the attempt's history: the HTTP status and body, or the transport error.
    pub record: String,
}

impl Answer {
    fn transport(reason: String) -> Answer {
        Answer {
            class: AnswerClass::Retryable { reason: reason.clone() },
            code: "transport".to_owned(),
            record: reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("the CA file {path} holds no usable certificate: {source}")]
    CaCertificates { path: String, source: reqwest::Error },
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
}

#[derive(Clone)]
pub(crate) struct CustomsClient {
    http: reqwest::Client,
    url: String,
}

impl CustomsClient {
    /// A client for `url`; `ca_file` (PEM) adds CAs to the system's, for a
    /// proxy or a test customs.
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<CustomsClient, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|source| ClientError::CaFile { path: path.display().to_string(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| ClientError::CaCertificates { path: path.display().to_string(), source })?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(CustomsClient { http: builder.build().map_err(ClientError::Build)?, url: url.to_owned() })
    }

    /// Posts one upload body, exactly as given, form-encoded as UTF-8.
    pub async fn upload(&self, body: &str) -> Answer {
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=UTF-8")
            .body(form_body(body))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Answer::transport(format!("no answer from customs: {}", transport_reason(&e)));
            }
        };
        let status = response.status().as_u16();
        match response.text().await {
            Ok(text) => Answer {
                class: classify(status, &text),
                code: match customs179_core::CustomsAnswer::parse(&text) {
                    Some(answer) if (200..300).contains(&status) => answer.code,
                    _ => format!("HTTP {status}"),
                },
                record: format!("HTTP {status}: {}", text.trim()),
            },
            Err(e) => Answer::transport(format!(
                "customs' answer was cut off (HTTP {status}): {}",
                transport_reason(&e)
            )),
        }
    }
}

/// `payExInfoStr=<body>`, percent-encoded as an HTML form does.
pub(crate) fn form_body(body: &str) -> String {
    let encoded: String = url_encode(body);
    format!("payExInfoStr={encoded}")
}

fn url_encode(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // application/x-www-form-urlencoded keeps these; the space is `+`.
    const FORM: &AsciiSet =
        &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_').remove(b' ');
    utf8_percent_encode(text, FORM).to_string().replace(' ', "+")
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        format!("cannot connect ({e})")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_to_the_exact_upload() {
        let upload = r#"{"a":"b c+d&e=f/测😀","n":5.0}"#;
        let form = form_body(upload);
        assert!(form.starts_with("payExInfoStr=%7B%22a%22%3A%22b+c%2Bd%26e%3Df%2F%E6%B5%8B"), "{form}");
        assert_eq!(customs179_core::form_field(form.as_bytes(), "payExInfoStr").unwrap(), upload);
    }
}
