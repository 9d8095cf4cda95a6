//! `customs179 verify`: does an upload's signature hold, and if not, why not.

use customs179_core::{PreSign, SignatureVerifier, UploadBody, form_field};

use super::{Failure, read_input, read_text};

/// Verifies the signature of an upload body against the card's certificate.
///
/// Reads the upload (the bare `payExInfoStr` JSON, or a form body
/// `payExInfoStr=…`), rebuilds the pre-sign bytes from the raw head and list
/// JSON and verifies `signValue`. With a certificate, `certNo` is checked
/// against its serial too. Prints `valid` and exits 0, or says why not and
/// exits 1; unreadable input exits 2.
#[derive(clap::Args)]
pub struct Args {
    /// The card's certificate (PEM, DER, or EportClient's one-line base64 DER) or its public key (PEM).
    #[arg(long)]
    cert: std::path::PathBuf,
    /// The upload body; `-` or nothing reads standard input.
    upload: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let cert = read_input(Some(&args.cert))?;
    let verifier = SignatureVerifier::from_bytes(&cert)
        .map_err(|e| Failure::BadInput(format!("{}: {e}", args.cert.display())))?;
    let text = read_text(args.upload.as_deref())?;
    let body = upload_json(&text)?;
    let upload = UploadBody::parse(&body).map_err(|problems| {
        let lines: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        Failure::BadInput(format!("not an upload body:\n{}", lines.join("\n")))
    })?;

    match verifier.cert_no() {
        Some(serial) if serial.as_str() != upload.cert_no => {
            return Err(Failure::Check(format!(
                "invalid: certNo {:?} is not this certificate's serial {serial} (customs answers 20004 to an unregistered certNo)",
                upload.cert_no
            )));
        }
        Some(_) => {}
        None => {
            eprintln!("note: certNo {:?} was not checked: a bare public key has no serial", upload.cert_no)
        }
    }
    if let Err(problems) = upload.record() {
        for problem in problems.0 {
            eprintln!("warning: the payment data breaks a field rule: {problem}");
        }
    }

    match verifier.verify(upload.presign.as_bytes(), &upload.sign_value) {
        Ok(()) => {
            println!("valid");
            Ok(())
        }
        Err(e) => Err(Failure::Check(format!("invalid: {e}{}", diagnosis(&verifier, &upload)))),
    }
}

/// The bare upload JSON, from either itself or a form body.
fn upload_json(text: &str) -> Result<String, Failure> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return Ok(trimmed.to_owned());
    }
    form_field(trimmed.as_bytes(), "payExInfoStr").map_err(|e| {
        Failure::BadInput(format!("the input is neither upload JSON nor a form body with payExInfoStr: {e}"))
    })
}

/// The most common cause of a bad signature is a body re-serialised after
/// signing; say so when the canonical form of the data is what was signed.
fn diagnosis(verifier: &SignatureVerifier, upload: &customs179_core::ParsedUpload) -> String {
    let Ok(record) = upload.record() else { return String::new() };
    let Ok(service_time) = upload.presign.service_time().parse() else { return String::new() };
    let Ok(canonical) = PreSign::build(&record, &upload.presign.session_id(), service_time) else {
        return String::new();
    };
    if canonical != upload.presign && verifier.verify(canonical.as_bytes(), &upload.sign_value).is_ok() {
        return "\n(the signature holds over the canonical serialisation of this data, not over the bytes \
            uploaded: the body was re-serialised after signing)"
            .to_owned();
    }
    String::new()
}
