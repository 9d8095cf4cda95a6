//! Checking a card's signature locally, before it is uploaded.
//!
//! Customs answers a bad signature only after the upload, with a code that does not say
//! which part was wrong (179 spec section 4). Verifying the card's `signValue` against its
//! certificate here catches a wrong pre-sign string, a wrong card or a mangled signature
//! while the customs call can still be answered in time.
//!
//! Two kinds of operator card exist: RSA-1024 with PKCS#1 v1.5 and SHA-1 (before mid-2022)
//! and SM2 with SM3 (since); the key in the certificate says which one signed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::referenced::OwnedToRef as _;
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned};

/// The SM2 user id (distinguishing identifier) the cards hash into every signature.
///
/// It is the default of GB/T 32918 and EportClient never sets another; a verifier with a
/// different id rejects every genuine card signature.
pub const SM2_USER_ID: &str = "1234567812345678";

/// Cards return SM2 signatures as raw r‖s (two 32-byte big-endian integers), not DER.
const SM2_SIGNATURE_LEN: usize = 64;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// Both the SM2 curve (as an id-ecPublicKey parameter) and, in some Chinese CA
/// certificates, the public key algorithm itself.
const SM2_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

/// Which signature scheme a card uses; it follows from the card's key, so callers never
/// have to configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SM2 cards (from about July 2022): SM3withSM2, raw r‖s signatures.
    Sm2Sm3,
    /// Older RSA-1024 cards: PKCS#1 v1.5 with SHA-1.
    RsaSha1,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sm2Sm3 => "SM2/SM3",
            Algorithm::RsaSha1 => "RSA/SHA-1",
        })
    }
}

/// The `certNo` of an upload: the signing certificate's serial as customs registered it.
///
/// Customs compares it as text, so its exact form matters: lower-case hex of the serial's
/// bytes as stored, keeping leading zero digits (`01691f7f`), never a decimal or a
/// re-padded number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNo(String);

impl CertNo {
    /// Builds the certNo from a serial's DER content bytes.
    ///
    /// A leading `00` that DER adds only to keep a serial with the high bit set positive is
    /// not part of the registered number, so it is dropped; every other byte is kept,
    /// because customs registers the stored width (8 or 16 hex digits).
    pub fn from_serial_bytes(bytes: &[u8]) -> CertNo {
        let bytes = match bytes {
            [0x00, next, ..] if next & 0x80 != 0 => &bytes[1..],
            _ => bytes,
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for byte in bytes {
            // Writing to a String cannot fail.
            let _ = fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}"));
        }
        CertNo(hex)
    }

    /// The certNo exactly as it goes into the upload body.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a certificate or key could not be used; each message says what was expected so the
/// operator can fetch the right thing from the card.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The input is not PEM, DER or one-line base64 DER of a certificate or public key.
    #[error("not a certificate or public key: {0}")]
    NotRecognised(String),
    /// A PEM block of another kind, e.g. a private key or a certificate request.
    #[error(
        "PEM block is labelled {label:?}; expected CERTIFICATE (the card's signing certificate) or PUBLIC KEY"
    )]
    UnsupportedPem {
        /// The label between `-----BEGIN ` and `-----`.
        label: String,
    },
    /// A key of an algorithm no customs card uses.
    #[error(
        "public key algorithm {oid} is not supported: customs cards use RSA (1.2.840.113549.1.1.1) or SM2 (1.2.156.10197.1.301)"
    )]
    UnsupportedAlgorithm {
        /// The SubjectPublicKeyInfo algorithm OID, dotted.
        oid: String,
    },
    /// An elliptic-curve key on another curve than SM2 (e.g. P-256).
    #[error(
        "elliptic-curve key on {curve} is not supported: customs SM2 cards use the SM2 curve (1.2.156.10197.1.301)"
    )]
    UnsupportedCurve {
        /// The curve OID, or a description when the key names no curve.
        curve: String,
    },
    /// The algorithm is right but the key itself cannot be used.
    #[error("cannot use this {algorithm} public key: {detail}")]
    InvalidKey {
        /// The scheme the key claimed to be for.
        algorithm: Algorithm,
        /// What is wrong with it.
        detail: String,
    },
}

/// Why a `signValue` was refused; the variants separate transport damage (base64, length)
/// from a signature that is well-formed but wrong (wrong card, or different signed bytes).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The signValue is not standard, padded base64 (it goes on the wire as is, so no
    /// whitespace is tolerated either).
    #[error("signValue is not valid base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    /// Usually a DER-encoded SM2 signature or one truncated on the way.
    #[error(
        "signValue decodes to {actual} bytes, but signatures of this key are {expected} bytes{}",
        length_hint(.expected)
    )]
    WrongLength {
        /// The length this key's signatures have.
        expected: usize,
        /// The length of the decoded signValue.
        actual: usize,
    },
    /// Well-formed, but not made by this key over these bytes.
    #[error("signature does not verify with this {0} key")]
    Invalid(Algorithm),
}

fn length_hint(expected: &usize) -> &'static str {
    if *expected == SM2_SIGNATURE_LEN { " (SM2 cards give raw r‖s, not DER)" } else { "" }
}

/// The key of one card, with what its certificate says about it, ready to check
/// signatures.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    key: Key,
    cert_no: Option<CertNo>,
    validity: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
enum Key {
    // Boxed: the SM2 key carries its precomputed identity hash and is much larger.
    Sm2(Box<sm2::dsa::VerifyingKey>),
    Rsa(rsa::PublicKey),
}

impl SignatureVerifier {
    /// Accepts: X.509 certificate as PEM ("-----BEGIN CERTIFICATE-----"), as DER bytes, as
    /// the one-line base64 DER that EportClient's `cus-sec_SpcGetSignCertAsPEM` returns
    /// (surrounding whitespace allowed); or a SubjectPublicKeyInfo
    /// "-----BEGIN PUBLIC KEY-----" PEM (or its DER).
    ///
    /// All these forms are accepted because operators copy the certificate from wherever
    /// they find it. The scheme comes from the key (rsaEncryption → RSA/SHA-1;
    /// id-ecPublicKey on the SM2 curve, or the SM2 OID as algorithm → SM2/SM3) because a
    /// wrongly configured scheme would reject every signature of the card.
    pub fn from_bytes(input: &[u8]) -> Result<Self, KeyError> {
        match to_der(input)? {
            Der::Certificate(der) => {
                let cert = Certificate::from_der(&der).map_err(|e| {
                    KeyError::NotRecognised(format!("CERTIFICATE block does not parse as X.509: {e}"))
                })?;
                Self::from_certificate(&cert)
            }
            Der::PublicKey(der) => {
                let spki = SubjectPublicKeyInfoOwned::from_der(&der)
                    .map_err(|e| KeyError::NotRecognised(format!("PUBLIC KEY block does not parse: {e}")))?;
                Self::from_spki(&spki, None, None)
            }
            Der::Unlabelled(der) => {
                // A certificate is tried first: that is what the card hands out.
                match Certificate::from_der(&der) {
                    Ok(cert) => Self::from_certificate(&cert),
                    Err(cert_err) => match SubjectPublicKeyInfoOwned::from_der(&der) {
                        Ok(spki) => Self::from_spki(&spki, None, None),
                        Err(key_err) => Err(KeyError::NotRecognised(format!(
                            "DER parses neither as an X.509 certificate ({cert_err}) nor as a public key ({key_err})"
                        ))),
                    },
                }
            }
        }
    }

    fn from_certificate(cert: &Certificate) -> Result<Self, KeyError> {
        let tbs = cert.tbs_certificate();
        let cert_no = CertNo::from_serial_bytes(tbs.serial_number().as_bytes());
        let validity = tbs.validity();
        let validity = (unix_seconds(validity.not_before), unix_seconds(validity.not_after));
        Self::from_spki(tbs.subject_public_key_info(), Some(cert_no), Some(validity))
    }

    fn from_spki(
        spki: &SubjectPublicKeyInfoOwned,
        cert_no: Option<CertNo>,
        validity: Option<(i64, i64)>,
    ) -> Result<Self, KeyError> {
        let oid = spki.algorithm.oid;
        let key = if oid == RSA_ENCRYPTION {
            let key = rsa::PublicKey::try_from(spki.owned_to_ref())
                .map_err(|e| KeyError::InvalidKey { algorithm: Algorithm::RsaSha1, detail: e.to_string() })?;
            Key::Rsa(key)
        } else if oid == ID_EC_PUBLIC_KEY || oid == SM2_OID {
            if oid == ID_EC_PUBLIC_KEY {
                match spki.algorithm.owned_to_ref().oids() {
                    Ok((_, Some(curve))) if curve == SM2_OID => {}
                    Ok((_, Some(curve))) => {
                        return Err(KeyError::UnsupportedCurve { curve: curve.to_string() });
                    }
                    Ok((_, None)) | Err(_) => {
                        return Err(KeyError::UnsupportedCurve {
                            curve: "a curve given by explicit parameters or not at all".into(),
                        });
                    }
                }
            }
            Key::Sm2(Box::new(sm2_key(spki)?))
        } else {
            return Err(KeyError::UnsupportedAlgorithm { oid: oid.to_string() });
        };
        Ok(SignatureVerifier { key, cert_no, validity })
    }

    /// The scheme of the card, for logs and the status page.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            Key::Sm2(_) => Algorithm::Sm2Sm3,
            Key::Rsa(_) => Algorithm::RsaSha1,
        }
    }

    /// The certNo from the certificate, to check the card's own `cus-sec_SpcGetCertNo`
    /// answer against. None when built from a bare public key (certNo then cannot be
    /// checked).
    pub fn cert_no(&self) -> Option<&CertNo> {
        self.cert_no.as_ref()
    }

    /// Certificate validity as unix seconds (not_before, not_after), so an expired card
    /// can be reported before customs starts refusing its signatures; None for a bare key.
    pub fn validity(&self) -> Option<(i64, i64)> {
        self.validity
    }

    /// Checks `sign_value`, the base64 signValue, over `message`, the exact pre-sign bytes.
    ///
    /// SM2: SM3withSM2 with user id [`SM2_USER_ID`] and a raw r‖s signature of 64 bytes,
    /// the only form customs accepts, so other lengths (such as DER) are refused.
    /// RSA: PKCS#1 v1.5 with SHA-1 over the message, as the old cards sign.
    pub fn verify(&self, message: &[u8], sign_value: &str) -> Result<(), SignatureError> {
        let bytes = BASE64.decode(sign_value).map_err(SignatureError::NotBase64)?;
        match &self.key {
            Key::Sm2(key) => {
                if bytes.len() != SM2_SIGNATURE_LEN {
                    return Err(SignatureError::WrongLength {
                        expected: SM2_SIGNATURE_LEN,
                        actual: bytes.len(),
                    });
                }
                // r or s out of range cannot come from a card: treat it as a bad signature.
                let signature = sm2::dsa::Signature::from_slice(&bytes)
                    .map_err(|_| SignatureError::Invalid(Algorithm::Sm2Sm3))?;
                key.verify(message, &signature).map_err(|_| SignatureError::Invalid(Algorithm::Sm2Sm3))
            }
            Key::Rsa(key) => {
                if bytes.len() != key.size() {
                    return Err(SignatureError::WrongLength { expected: key.size(), actual: bytes.len() });
                }
                let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice())
                    .map_err(|_| SignatureError::Invalid(Algorithm::RsaSha1))?;
                rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key.clone())
                    .verify(message, &signature)
                    .map_err(|_| SignatureError::Invalid(Algorithm::RsaSha1))
            }
        }
    }
}

fn sm2_key(spki: &SubjectPublicKeyInfoOwned) -> Result<sm2::dsa::VerifyingKey, KeyError> {
    let invalid =
        |detail: &str| KeyError::InvalidKey { algorithm: Algorithm::Sm2Sm3, detail: detail.to_owned() };
    let point =
        spki.subject_public_key.as_bytes().ok_or_else(|| invalid("the key's BIT STRING has unused bits"))?;
    let public_key = sm2::PublicKey::from_sec1_bytes(point)
        .map_err(|_| invalid("the key is not a point on the SM2 curve"))?;
    sm2::dsa::VerifyingKey::new(SM2_USER_ID, public_key)
        .map_err(|_| invalid("the key's identity hash cannot be computed"))
}

/// Whole days left at `now_ms` (unix ms) until a certificate's `not_after`
/// (unix s): 0 on its last day, -1 the day after it ended.
pub fn days_left(not_after: i64, now_ms: i64) -> i64 {
    (not_after - now_ms.div_euclid(1000)).div_euclid(86_400)
}

/// What registering a card with customs needs of its certificate (spec section 6), and the
/// certificate itself.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// As customs registers it: lower-case hex of the serial.
    pub cert_no: CertNo,
    /// RFC 4514 text of the subject and the issuer.
    pub subject: String,
    pub issuer: String,
    pub algorithm: Algorithm,
    /// Validity, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl CertificateInfo {
    /// A certificate as PEM, DER, or one line of base64 DER (as the card gives it). A bare
    /// public key is refused: registration needs the certificate.
    pub fn from_bytes(input: &[u8]) -> Result<CertificateInfo, KeyError> {
        let der = match to_der(input)? {
            Der::Certificate(der) | Der::Unlabelled(der) => der,
            Der::PublicKey(_) => {
                return Err(KeyError::NotRecognised("a public key, not a certificate".into()));
            }
        };
        let cert = Certificate::from_der(&der)
            .map_err(|e| KeyError::NotRecognised(format!("not an X.509 certificate: {e}")))?;
        let verifier = SignatureVerifier::from_certificate(&cert)?;
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        Ok(CertificateInfo {
            cert_no: CertNo::from_serial_bytes(tbs.serial_number().as_bytes()),
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            algorithm: verifier.algorithm(),
            not_before: unix_seconds(validity.not_before),
            not_after: unix_seconds(validity.not_after),
            der,
        })
    }

    /// The certificate as PEM: base64 in lines of 64, LF line ends.
    pub fn pem(&self) -> String {
        let body = BASE64.encode(&self.der);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            // Base64 is ASCII: every chunk is text.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }
}

fn unix_seconds(time: x509_cert::time::Time) -> i64 {
    // UTCTime and GeneralizedTime cannot go past year 9999, far below i64::MAX seconds.
    i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// DER bytes, with what the PEM label (if any) said they are.
enum Der {
    Certificate(Vec<u8>),
    PublicKey(Vec<u8>),
    Unlabelled(Vec<u8>),
}

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_DASHES: &[u8] = b"-----";

/// Turns any of the accepted encodings into DER without judging its content yet.
fn to_der(input: &[u8]) -> Result<Der, KeyError> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(KeyError::NotRecognised("the input is empty".into()));
    }
    // Certificates and keys are DER SEQUENCEs, whose first byte 0x30 no PEM text or
    // base64 of a SEQUENCE ("M...") starts with. The untrimmed input is used: trimming
    // could eat DER bytes that happen to be whitespace characters.
    if input.first() == Some(&0x30) {
        return Ok(Der::Unlabelled(input.to_vec()));
    }
    if let Some(start) = find(trimmed, PEM_BEGIN) {
        return from_pem(&trimmed[start..]);
    }
    // A base64 line saved by a Windows editor may begin with a UTF-8 byte order mark.
    let trimmed = trimmed.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(trimmed).trim_ascii();
    decode_base64_body(trimmed).map(Der::Unlabelled).map_err(|e| {
        KeyError::NotRecognised(format!(
            "expected a PEM block, DER, or one line of base64 DER; the input is not base64 ({e})"
        ))
    })
}

/// Reads the first PEM block; only its label decides what it is. Lenient about line
/// lengths and line endings, since certificates are often pasted from other tools.
fn from_pem(pem: &[u8]) -> Result<Der, KeyError> {
    let malformed = |what: &str| KeyError::NotRecognised(format!("malformed PEM: {what}"));
    let after_begin = &pem[PEM_BEGIN.len()..];
    let label_end = find(after_begin, PEM_DASHES).ok_or_else(|| malformed("BEGIN line does not end"))?;
    let label_bytes = &after_begin[..label_end];
    let label = String::from_utf8_lossy(label_bytes).into_owned();
    let body_and_rest = &after_begin[label_end + PEM_DASHES.len()..];
    let mut end_line = b"-----END ".to_vec();
    end_line.extend_from_slice(label_bytes);
    end_line.extend_from_slice(PEM_DASHES);
    let body_end = find(body_and_rest, &end_line)
        .ok_or_else(|| malformed(&format!("no \"-----END {label}-----\" line")))?;
    let body = &body_and_rest[..body_end];
    let wrap: fn(Vec<u8>) -> Der = match label.as_str() {
        "CERTIFICATE" | "X509 CERTIFICATE" => Der::Certificate,
        "PUBLIC KEY" => Der::PublicKey,
        _ => return Err(KeyError::UnsupportedPem { label }),
    };
    decode_base64_body(body)
        .map(wrap)
        .map_err(|e| malformed(&format!("the {label} body is not base64 ({e})")))
}

/// Base64 with all ASCII whitespace removed: PEM bodies are wrapped at 64 columns and
/// EportClient's one-line form may carry a line ending.
fn decode_base64_body(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64.decode(compact)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use x509_cert::der::Encode as _;
    use x509_cert::der::asn1::BitString;
    use x509_cert::spki::AlgorithmIdentifierOwned;

    #[test]
    fn days_left_count_whole_days_and_go_negative_once_past() {
        let not_after = 1_800_000_000;
        assert_eq!(days_left(not_after, not_after * 1000), 0, "its last second");
        assert_eq!(days_left(not_after, (not_after - 86_400) * 1000), 1);
        assert_eq!(days_left(not_after, (not_after - 86_399) * 1000), 0, "under a day left");
        assert_eq!(days_left(not_after, (not_after + 1) * 1000), -1, "ended a second ago");
        assert_eq!(days_left(not_after, (not_after + 86_401) * 1000), -2);
    }

    const SM2_CARD_KEY: &[u8] = include_bytes!("../../../tests/data/vectors/sm2-card-public-key.pem");
    const A_PRESIGN: &[u8] = include_bytes!("../../../tests/data/vectors/a.presign.txt");
    const A_SIGNATURE: &str = include_str!("../../../tests/data/vectors/a.signature.b64");
    const B_PRESIGN: &[u8] = include_bytes!("../../../tests/data/vectors/b.presign.txt");
    const B_UPLOAD: &str = include_str!("../../../tests/data/vectors/b.upload.json");

    const RSA_CERT_PEM: &[u8] = include_bytes!("../tests/data/rsa-cert.pem");
    const RSA_CERT_DER: &[u8] = include_bytes!("../tests/data/rsa-cert.der");
    const RSA_CERT_B64: &[u8] = include_bytes!("../tests/data/rsa-cert.b64");
    const RSA_PUBLIC_KEY: &[u8] = include_bytes!("../tests/data/rsa-public-key.pem");
    const RSA_MSG: &[u8] = include_bytes!("../tests/data/rsa-msg.txt");
    const RSA_SIG: &str = include_str!("../tests/data/rsa-sig.b64");
    const SM2_CERT_PEM: &[u8] = include_bytes!("../tests/data/sm2-cert.pem");
    const SM2_MSG: &[u8] = include_bytes!("../tests/data/sm2-msg.txt");
    const SM2_SIG: &str = include_str!("../tests/data/sm2-sig.b64");

    fn card() -> SignatureVerifier {
        SignatureVerifier::from_bytes(SM2_CARD_KEY).expect("card key loads")
    }

    /// Flips one bit of the byte at `index` of a base64 value, returning valid base64.
    fn tamper_signature(sign_value: &str, index: usize) -> String {
        let mut bytes = BASE64.decode(sign_value).expect("fixture is base64");
        bytes[index] ^= 0x01;
        BASE64.encode(bytes)
    }

    #[test]
    fn display_forms() {
        assert_eq!(Algorithm::Sm2Sm3.to_string(), "SM2/SM3");
        assert_eq!(Algorithm::RsaSha1.to_string(), "RSA/SHA-1");
        assert_eq!(
            SignatureError::Invalid(Algorithm::Sm2Sm3).to_string(),
            "signature does not verify with this SM2/SM3 key"
        );
    }

    #[test]
    fn vector_a_verifies_with_the_card_key() {
        let card = card();
        assert_eq!(card.algorithm(), Algorithm::Sm2Sm3);
        assert_eq!(card.cert_no(), None);
        assert_eq!(card.validity(), None);
        assert_eq!(A_PRESIGN.len(), 886);
        card.verify(A_PRESIGN, A_SIGNATURE).expect("vector a verifies");
    }

    #[test]
    fn vector_a_with_one_message_byte_changed_fails() {
        let card = card();
        for index in [0, A_PRESIGN.len() / 2, A_PRESIGN.len() - 1] {
            let mut message = A_PRESIGN.to_vec();
            message[index] ^= 0x01;
            assert!(matches!(
                card.verify(&message, A_SIGNATURE),
                Err(SignatureError::Invalid(Algorithm::Sm2Sm3))
            ));
        }
        // One byte more or less is a different message too.
        assert!(card.verify(&A_PRESIGN[1..], A_SIGNATURE).is_err());
        let mut longer = A_PRESIGN.to_vec();
        longer.push(b'\n');
        assert!(card.verify(&longer, A_SIGNATURE).is_err());
    }

    #[test]
    fn vector_a_with_one_signature_byte_changed_fails() {
        let card = card();
        for index in [0, 31, 32, 63] {
            let tampered = tamper_signature(A_SIGNATURE, index);
            assert!(matches!(
                card.verify(A_PRESIGN, &tampered),
                Err(SignatureError::Invalid(Algorithm::Sm2Sm3))
            ));
        }
    }

    #[test]
    fn bad_base64_is_not_base64() {
        let card = card();
        for bad in ["not base64!", "05mobHSr NqcyA==", &A_SIGNATURE[1..]] {
            assert!(matches!(card.verify(A_PRESIGN, bad), Err(SignatureError::NotBase64(_))), "{bad:?}");
        }
        // The signValue goes on the wire as is, so whitespace is not silently accepted.
        let with_newline = format!("{A_SIGNATURE}\n");
        assert!(matches!(card.verify(A_PRESIGN, &with_newline), Err(SignatureError::NotBase64(_))));
    }

    #[test]
    fn wrong_length_signatures_are_refused_with_both_lengths() {
        let card = card();
        let raw = BASE64.decode(A_SIGNATURE).expect("fixture is base64");
        let short = BASE64.encode(&raw[..63]);
        assert!(matches!(
            card.verify(A_PRESIGN, &short),
            Err(SignatureError::WrongLength { expected: 64, actual: 63 })
        ));
        assert!(matches!(
            card.verify(A_PRESIGN, ""),
            Err(SignatureError::WrongLength { expected: 64, actual: 0 })
        ));

        // The same signature in DER, as OpenSSL writes it, is not what cards send.
        let der = sm2::dsa::Signature::from_slice(&raw).expect("vector a is a valid signature").to_der();
        let der_b64 = BASE64.encode(der.as_bytes());
        let err = card.verify(A_PRESIGN, &der_b64).expect_err("DER is refused");
        assert!(matches!(err, SignatureError::WrongLength { expected: 64, .. }));
        assert!(err.to_string().contains("not DER"), "{err}");

        let rsa = SignatureVerifier::from_bytes(RSA_CERT_PEM).expect("RSA cert loads");
        assert!(matches!(
            rsa.verify(RSA_MSG, A_SIGNATURE),
            Err(SignatureError::WrongLength { expected: 128, actual: 64 })
        ));
    }

    #[test]
    fn out_of_range_sm2_scalars_are_invalid_not_a_panic() {
        let card = card();
        for raw in [[0u8; 64], [0xff; 64]] {
            assert!(matches!(
                card.verify(A_PRESIGN, &BASE64.encode(raw)),
                Err(SignatureError::Invalid(Algorithm::Sm2Sm3))
            ));
        }
    }

    #[test]
    fn vector_b_upload_signature_verifies_over_its_presign_string() {
        let upload: serde_json::Value = serde_json::from_str(B_UPLOAD).expect("upload is JSON");
        let sign_value = upload["signValue"].as_str().expect("signValue is a string");
        assert_eq!(upload["certNo"].as_str(), Some("03000000000cde6f"));
        let card = card();
        card.verify(B_PRESIGN, sign_value).expect("vector b verifies");
        // And it is not valid over vector a: the check is really about the bytes.
        assert!(card.verify(A_PRESIGN, sign_value).is_err());
    }

    #[test]
    fn garbage_is_a_key_error() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"  \n",
            b"hello world",
            b"\x30\x03\x02\x01\x01",
            b"\x30\x82\xff\xff",
            b"TUlJ",
            b"-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nMIIB",
        ];
        for input in inputs {
            let err = SignatureVerifier::from_bytes(input).expect_err("garbage is refused");
            assert!(matches!(err, KeyError::NotRecognised(_)), "{input:?}: {err:?}");
            assert!(err.to_string().starts_with("not a certificate or public key: "));
        }
    }

    #[test]
    fn other_pem_blocks_are_named_in_the_error() {
        let err =
            SignatureVerifier::from_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
                .expect_err("a private key is refused");
        assert!(matches!(&err, KeyError::UnsupportedPem { label } if label == "PRIVATE KEY"), "{err:?}");
    }

    fn spki_der(algorithm: &str, parameters: Option<&str>, key: &[u8]) -> Vec<u8> {
        let parameters = parameters.map(|oid| {
            x509_cert::der::Any::encode_from(&ObjectIdentifier::new_unwrap(oid)).expect("OID encodes")
        });
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned { oid: ObjectIdentifier::new_unwrap(algorithm), parameters },
            subject_public_key: BitString::from_bytes(key).expect("bit string"),
        }
        .to_der()
        .expect("SPKI encodes")
    }

    fn card_point() -> Vec<u8> {
        let pem = std::str::from_utf8(SM2_CARD_KEY).expect("PEM is text");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = BASE64.decode(body).expect("PEM body is base64");
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).expect("SPKI parses");
        spki.subject_public_key.as_bytes().expect("whole bytes").to_vec()
    }

    #[test]
    fn sm2_oid_as_the_key_algorithm_is_sm2() {
        let der = spki_der("1.2.156.10197.1.301", None, &card_point());
        let key = SignatureVerifier::from_bytes(&der).expect("SM2-OID key loads");
        assert_eq!(key.algorithm(), Algorithm::Sm2Sm3);
        key.verify(A_PRESIGN, A_SIGNATURE).expect("vector a verifies");
    }

    #[test]
    fn other_algorithms_and_curves_are_refused_by_name() {
        let p256 = spki_der("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7"), &card_point());
        let err = SignatureVerifier::from_bytes(&p256).expect_err("P-256 is refused");
        assert!(
            matches!(&err, KeyError::UnsupportedCurve { curve } if curve == "1.2.840.10045.3.1.7"),
            "{err:?}"
        );

        let no_curve = spki_der("1.2.840.10045.2.1", None, &card_point());
        assert!(matches!(SignatureVerifier::from_bytes(&no_curve), Err(KeyError::UnsupportedCurve { .. })));

        let ed25519 = spki_der("1.3.101.112", None, &[0u8; 32]);
        let err = SignatureVerifier::from_bytes(&ed25519).expect_err("Ed25519 is refused");
        assert!(matches!(&err, KeyError::UnsupportedAlgorithm { oid } if oid == "1.3.101.112"), "{err:?}");
        assert!(err.to_string().contains("RSA"), "{err}");

        let not_a_point = spki_der("1.2.840.10045.2.1", Some("1.2.156.10197.1.301"), &[0x04; 65]);
        assert!(matches!(
            SignatureVerifier::from_bytes(&not_a_point),
            Err(KeyError::InvalidKey { algorithm: Algorithm::Sm2Sm3, .. })
        ));

        let not_rsa = spki_der("1.2.840.113549.1.1.1", None, &[0x30, 0x00]);
        assert!(matches!(
            SignatureVerifier::from_bytes(&not_rsa),
            Err(KeyError::InvalidKey { algorithm: Algorithm::RsaSha1, .. })
        ));
    }

    #[test]
    fn cert_no_from_serial_bytes() {
        assert_eq!(CertNo::from_serial_bytes(&[0x00, 0x80, 0x01]).as_str(), "8001");
        assert_eq!(
            CertNo::from_serial_bytes(&[0x03, 0, 0, 0, 0, 0x0c, 0xde, 0x6f]).to_string(),
            "03000000000cde6f"
        );
        assert_eq!(CertNo::from_serial_bytes(&[0x01, 0x69, 0x1f, 0x7f]).as_str(), "01691f7f");
        assert_eq!(CertNo::from_serial_bytes(&[0x00]).as_str(), "00");
        assert_eq!(CertNo::from_serial_bytes(&[]).as_str(), "");
    }

    const RSA_VALIDITY: (i64, i64) = (1_795_924_975, 2_111_284_975);

    fn check_rsa(verifier: &SignatureVerifier) {
        assert_eq!(verifier.algorithm(), Algorithm::RsaSha1);
        assert_eq!(verifier.cert_no().map(CertNo::as_str), Some("01691f7f"));
        assert_eq!(verifier.validity(), Some(RSA_VALIDITY));
        verifier.verify(RSA_MSG, RSA_SIG).expect("RSA fixture verifies");
    }

    #[test]
    fn rsa_certificate_loads_in_every_form_and_verifies() {
        check_rsa(&SignatureVerifier::from_bytes(RSA_CERT_PEM).expect("PEM"));
        check_rsa(&SignatureVerifier::from_bytes(RSA_CERT_DER).expect("DER"));
        check_rsa(&SignatureVerifier::from_bytes(RSA_CERT_B64).expect("one-line base64"));

        let mut padded = b" \r\n".to_vec();
        padded.extend_from_slice(RSA_CERT_B64);
        padded.extend_from_slice(b"\r\n");
        check_rsa(&SignatureVerifier::from_bytes(&padded).expect("base64 with whitespace"));

        let mut with_text = b"Certificate:\n    (openssl -text output)\n".to_vec();
        with_text.extend_from_slice(RSA_CERT_PEM);
        check_rsa(&SignatureVerifier::from_bytes(&with_text).expect("PEM after text"));

        let crlf = String::from_utf8_lossy(RSA_CERT_PEM).replace('\n', "\r\n");
        check_rsa(&SignatureVerifier::from_bytes(crlf.as_bytes()).expect("PEM with CRLF"));

        for form in [RSA_CERT_B64, RSA_CERT_PEM] {
            let mut with_bom = b"\xEF\xBB\xBF".to_vec();
            with_bom.extend_from_slice(form);
            check_rsa(&SignatureVerifier::from_bytes(&with_bom).expect("after a byte order mark"));
        }
    }

    #[test]
    fn rsa_bare_key_verifies_without_cert_no() {
        let key = SignatureVerifier::from_bytes(RSA_PUBLIC_KEY).expect("RSA key loads");
        assert_eq!(key.algorithm(), Algorithm::RsaSha1);
        assert_eq!(key.cert_no(), None);
        assert_eq!(key.validity(), None);
        key.verify(RSA_MSG, RSA_SIG).expect("RSA fixture verifies");
    }

    #[test]
    fn rsa_tampering_fails() {
        let rsa = SignatureVerifier::from_bytes(RSA_CERT_DER).expect("RSA cert loads");
        let mut message = RSA_MSG.to_vec();
        message[100] ^= 0x01;
        assert!(matches!(rsa.verify(&message, RSA_SIG), Err(SignatureError::Invalid(Algorithm::RsaSha1))));
        for index in [0, 64, 127] {
            assert!(matches!(
                rsa.verify(RSA_MSG, &tamper_signature(RSA_SIG, index)),
                Err(SignatureError::Invalid(Algorithm::RsaSha1))
            ));
        }
        // An SM2 signature over the same bytes is not an RSA one.
        assert!(rsa.verify(SM2_MSG, SM2_SIG).is_err());
    }

    #[test]
    fn sm2_certificate_loads_and_verifies() {
        let sm2 = SignatureVerifier::from_bytes(SM2_CERT_PEM).expect("SM2 cert loads");
        assert_eq!(sm2.algorithm(), Algorithm::Sm2Sm3);
        // The serial 0x9f00000000cde701 is stored with a DER sign byte 00 in front.
        assert_eq!(sm2.cert_no().map(CertNo::as_str), Some("9f00000000cde701"));
        assert_eq!(sm2.validity(), Some((1_795_924_989, 2_111_284_989)));
        sm2.verify(SM2_MSG, SM2_SIG).expect("SM2 fixture verifies");
        assert!(matches!(
            sm2.verify(SM2_MSG, &tamper_signature(SM2_SIG, 10)),
            Err(SignatureError::Invalid(Algorithm::Sm2Sm3))
        ));
        // A different card's signature over other bytes does not pass either.
        assert!(sm2.verify(A_PRESIGN, A_SIGNATURE).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_key_input_never_panics(input in vec(any::<u8>(), 0..600)) {
            let _ = SignatureVerifier::from_bytes(&input);
            let mut der = vec![0x30];
            der.extend_from_slice(&input);
            let _ = SignatureVerifier::from_bytes(&der);
            let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
            pem.extend_from_slice(&input);
            let _ = SignatureVerifier::from_bytes(&pem);
        }

        #[test]
        fn arbitrary_sign_values_never_panic(sign_value in ".{0,200}", message in vec(any::<u8>(), 0..100)) {
            let _ = card().verify(&message, &sign_value);
            let rsa = SignatureVerifier::from_bytes(RSA_CERT_DER).expect("RSA cert loads");
            let _ = rsa.verify(&message, &sign_value);
        }

        #[test]
        fn any_64_bytes_other_than_the_card_signature_fail(raw in vec(any::<u8>(), 64)) {
            prop_assert!(card().verify(A_PRESIGN, &BASE64.encode(&raw)).is_err());
        }
    }
}
