//! The simulated card's key pair and certificate.
//!
//! They live in a state directory and are reused on every start, because customs knows a
//! card by its certNo: a simulator that changed its certNo on each start would have to be
//! registered again with every customs simulator and every fixture that names it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use customs179_core::CertNo;
use customs179_core::signature::SM2_USER_ID;
use getrandom::SysRng;
use rsa::signature::{Keypair as _, RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use sm2::elliptic_curve::Generate as _;
use sm2::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{self, Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::{DateTime, Decode as _, DecodePem as _, Encode as _, EncodePem as _};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SignatureBitStringEncoding as _, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

/// The private key file in the state directory (PKCS#8 PEM).
pub const KEY_FILE: &str = "sign-key.pem";
/// The self-signed certificate file in the state directory (PEM).
pub const CERT_FILE: &str = "sign-cert.pem";

/// Real cards are RSA-1024 (before mid-2022) or SM2; the simulator makes the same sizes so
/// signature lengths (172 and 88 base64 characters) match what the service will see.
const RSA_BITS: usize = 1024;
/// Ten years, counting the leap days a decade holds at most.
const CERT_LIFETIME: Duration = Duration::from_secs(3_653 * 24 * 3_600);

/// Which kind of card to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    /// SM3withSM2, user id `1234567812345678`, raw r‖s signatures (cards since mid-2022).
    Sm2,
    /// RSA-1024, PKCS#1 v1.5 with SHA-1 (older cards).
    Rsa,
}

impl Algo {
    /// The lower-case name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sm2 => "sm2",
            Algo::Rsa => "rsa",
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Algo, KeyError> {
        match text.to_ascii_lowercase().as_str() {
            "sm2" => Ok(Algo::Sm2),
            "rsa" => Ok(Algo::Rsa),
            _ => Err(KeyError::UnknownAlgo(text.to_owned())),
        }
    }
}

/// Why the card's keys could not be made, read or used. Each message names the file and
/// what to do, since the usual fix is deleting a stale state directory.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown card algorithm {0:?}: expected sm2 or rsa")]
    UnknownAlgo(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    #[error("cannot make the {algo} card key or certificate: {detail}")]
    Generate { algo: Algo, detail: String },
    #[error("{}: {detail}", path.display())]
    Unreadable { path: PathBuf, detail: String },
    #[error(
        "{} holds an {stored} key but the simulator was asked for {requested}: use --algo {stored}, or another state directory",
        path.display()
    )]
    AlgoMismatch { path: PathBuf, stored: Algo, requested: Algo },
    #[error(
        "{} exists but {} does not: delete the state directory's {KEY_FILE} and {CERT_FILE} to make a new card",
        present.display(),
        missing.display()
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error(
        "{} is not the certificate of the key in {}: delete both to make a new card",
        cert.display(),
        key.display()
    )]
    CertificateMismatch { cert: PathBuf, key: PathBuf },
    #[error("the card failed to sign: {0}")]
    Sign(String),
}

#[derive(Clone)]
enum CardSigner {
    // Boxed: the SM2 key carries its precomputed identity hash.
    Sm2(Box<sm2::dsa::SigningKey>),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>),
}

/// The card: a private key, its self-signed certificate and the certNo derived from it.
#[derive(Clone)]
pub struct CardKeys {
    signer: CardSigner,
    cert_der: Vec<u8>,
    cert_no: CertNo,
    validity: (i64, i64),
}

impl fmt::Debug for CardKeys {
    // Never prints the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardKeys")
            .field("algo", &self.algo())
            .field("cert_no", &self.cert_no)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl CardKeys {
    /// A new card held in memory only.
    pub fn generate(algo: Algo) -> Result<CardKeys, KeyError> {
        let generate = |detail: String| KeyError::Generate { algo, detail };
        let signer = match algo {
            Algo::Sm2 => {
                let secret = sm2::SecretKey::try_generate().map_err(|e| KeyError::Random(e.to_string()))?;
                let key = sm2::dsa::SigningKey::new(SM2_USER_ID, &secret)
                    .map_err(|e| generate(format!("SM2 signing key: {e}")))?;
                CardSigner::Sm2(Box::new(key))
            }
            Algo::Rsa => {
                let key = rsa::PrivateKey::new(&mut SysRng, RSA_BITS)
                    .map_err(|e| generate(format!("RSA key: {e}")))?;
                CardSigner::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        };
        let validity = CertValidity::from_now(CERT_LIFETIME).map_err(generate)?;
        CardKeys::certify(signer, validity)
    }

    /// The same card (its key) with a new certificate valid over `validity`, as a renewal
    /// gives: a new serial, so a new certNo to register.
    pub fn renewed(&self, validity: CertValidity) -> Result<CardKeys, KeyError> {
        CardKeys::certify(self.signer.clone(), validity)
    }

    fn certify(signer: CardSigner, validity: CertValidity) -> Result<CardKeys, KeyError> {
        let generate = |detail: String| KeyError::Generate { algo: signer_algo(&signer), detail };
        let cert =
            self_signed_certificate(&signer, validity).map_err(|e| generate(format!("certificate: {e}")))?;
        let cert_der = cert.to_der().map_err(|e| generate(format!("certificate encoding: {e}")))?;
        Ok(CardKeys::assemble(signer, &cert, cert_der))
    }

    /// The card kept in `dir`, made there on first use. With `validity`, its certificate is
    /// valid over exactly that: a stored card whose certificate says otherwise is renewed
    /// (the same key, a new certificate and certNo, written back).
    ///
    /// A stored card of the other algorithm is an error rather than being replaced: its
    /// certNo may already be registered somewhere, and silently making a new card would
    /// break that registration.
    pub fn load_or_create(
        dir: &Path,
        algo: Algo,
        validity: Option<CertValidity>,
    ) -> Result<CardKeys, KeyError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let keys = match (key_path.exists(), cert_path.exists()) {
            (true, true) => CardKeys::load(dir, algo)?,
            (true, false) => return Err(KeyError::Incomplete { present: key_path, missing: cert_path }),
            (false, true) => return Err(KeyError::Incomplete { present: cert_path, missing: key_path }),
            (false, false) => {
                std::fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.into(), source })?;
                let keys = CardKeys::generate(algo)?;
                keys.write(dir)?;
                tracing::info!(dir = %dir.display(), %algo, cert_no = %keys.cert_no, "made a new simulated card");
                keys
            }
        };
        match validity {
            Some(validity) if validity != keys.cert_validity() => {
                let renewed = keys.renewed(validity)?;
                renewed.replace_certificate(dir)?;
                tracing::info!(
                    dir = %dir.display(),
                    cert_no = %renewed.cert_no,
                    not_after = validity.not_after,
                    "gave the simulated card a new certificate"
                );
                Ok(renewed)
            }
            _ => Ok(keys),
        }
    }

    /// The card stored in `dir` by an earlier start.
    pub fn load(dir: &Path, algo: Algo) -> Result<CardKeys, KeyError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let key_text = read_text(&key_path)?;
        let cert_text = read_text(&cert_path)?;
        let unreadable = |path: &Path, detail: String| KeyError::Unreadable { path: path.into(), detail };

        let signer = if let Ok(secret) = sm2::SecretKey::from_pkcs8_pem(&key_text) {
            let key = sm2::dsa::SigningKey::new(SM2_USER_ID, &secret)
                .map_err(|e| unreadable(&key_path, format!("unusable SM2 key: {e}")))?;
            CardSigner::Sm2(Box::new(key))
        } else if let Ok(key) = rsa::PrivateKey::from_pkcs8_pem(&key_text) {
            CardSigner::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
        } else {
            return Err(unreadable(&key_path, "not a PKCS#8 PEM SM2 or RSA private key".into()));
        };
        let stored = signer_algo(&signer);
        if stored != algo {
            return Err(KeyError::AlgoMismatch { path: key_path, stored, requested: algo });
        }

        let cert = Certificate::from_pem(cert_text.as_bytes())
            .map_err(|e| unreadable(&cert_path, format!("not a PEM X.509 certificate: {e}")))?;
        let cert_der = cert.to_der().map_err(|e| unreadable(&cert_path, format!("cannot re-encode: {e}")))?;
        let own_spki = signer_spki(&signer).map_err(|e| unreadable(&key_path, e))?;
        if cert.tbs_certificate().subject_public_key_info() != &own_spki {
            return Err(KeyError::CertificateMismatch { cert: cert_path, key: key_path });
        }
        Ok(CardKeys::assemble(signer, &cert, cert_der))
    }

    fn assemble(signer: CardSigner, cert: &Certificate, cert_der: Vec<u8>) -> CardKeys {
        let tbs = cert.tbs_certificate();
        let cert_no = CertNo::from_serial_bytes(tbs.serial_number().as_bytes());
        let validity = tbs.validity();
        let validity = (unix_seconds(validity.not_before), unix_seconds(validity.not_after));
        CardKeys { signer, cert_der, cert_no, validity }
    }

    /// Writes both files; the key is readable by its owner only where permissions exist.
    fn write(&self, dir: &Path) -> Result<(), KeyError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let encode = |detail: String| KeyError::Generate { algo: self.algo(), detail };
        let key_pem = match &self.signer {
            CardSigner::Sm2(key) => {
                let secret = sm2::SecretKey::from_bytes(&key.to_bytes())
                    .map_err(|e| encode(format!("SM2 key bytes: {e}")))?;
                secret.to_pkcs8_pem(LineEnding::LF)
            }
            CardSigner::Rsa(key) => key.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|e| encode(format!("PKCS#8 encoding: {e}")))?;
        let cert_pem = self.cert_pem().map_err(encode)?;
        // The certificate goes last: a key without its certificate is reported on the next
        // start instead of being paired with a certificate for another key.
        write_file(&key_path, key_pem.as_bytes(), true)?;
        write_file(&cert_path, cert_pem.as_bytes(), false)
    }

    /// Puts this card's certificate in place of the one in `dir` (the key stays): written
    /// beside it, then renamed over it, so a crash leaves one or the other whole.
    fn replace_certificate(&self, dir: &Path) -> Result<(), KeyError> {
        let cert_path = dir.join(CERT_FILE);
        let fresh = dir.join(format!("{CERT_FILE}.new"));
        let _ = std::fs::remove_file(&fresh);
        let pem = self.cert_pem().map_err(|detail| KeyError::Generate { algo: self.algo(), detail })?;
        write_file(&fresh, pem.as_bytes(), false)?;
        std::fs::rename(&fresh, &cert_path).map_err(|source| KeyError::Io { path: cert_path, source })
    }

    pub fn algo(&self) -> Algo {
        signer_algo(&self.signer)
    }

    /// The certNo the card reports, from the certificate's serial exactly as the service's
    /// verifier derives it.
    pub fn cert_no(&self) -> &CertNo {
        &self.cert_no
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate as `cus-sec_SpcGetSignCertAsPEM` returns it: one line of base64 DER.
    pub fn cert_base64(&self) -> String {
        BASE64.encode(&self.cert_der)
    }

    pub fn cert_pem(&self) -> Result<String, String> {
        Certificate::from_der(&self.cert_der)
            .and_then(|cert| cert.to_pem(LineEnding::LF))
            .map_err(|e| format!("PEM encoding of the certificate: {e}"))
    }

    /// Validity as unix seconds (not before, not after).
    pub fn validity(&self) -> (i64, i64) {
        self.validity
    }

    pub fn cert_validity(&self) -> CertValidity {
        CertValidity { not_before: self.validity.0, not_after: self.validity.1 }
    }

    /// Signs the bytes as the card does and returns the signValue (base64): SM3withSM2 as
    /// raw r‖s (88 characters) or RSA PKCS#1 v1.5 SHA-1 (172 characters).
    ///
    /// SM2 signatures take a fresh random nonce like a card's, so signing the same text
    /// twice gives two different (both valid) signatures.
    pub fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        let raw = match &self.signer {
            CardSigner::Sm2(key) => key
                .try_sign_with_rng(&mut SysRng, message)
                .map_err(|e| KeyError::Sign(e.to_string()))?
                .to_vec(),
            CardSigner::Rsa(key) => {
                key.try_sign(message).map_err(|e| KeyError::Sign(e.to_string()))?.to_vec()
            }
        };
        Ok(BASE64.encode(raw))
    }
}

fn signer_algo(signer: &CardSigner) -> Algo {
    match signer {
        CardSigner::Sm2(_) => Algo::Sm2,
        CardSigner::Rsa(_) => Algo::Rsa,
    }
}

fn signer_spki(signer: &CardSigner) -> Result<SubjectPublicKeyInfoOwned, String> {
    match signer {
        CardSigner::Sm2(key) => SubjectPublicKeyInfoOwned::from_key(key.verifying_key()),
        CardSigner::Rsa(key) => SubjectPublicKeyInfoOwned::from_key(&key.verifying_key()),
    }
    .map_err(|e| format!("cannot encode the public key: {e}"))
}

/// A self-signed end-entity certificate shaped like a card's: an 8-byte serial that gives a
/// 16-digit certNo, signing key usage.
fn self_signed_certificate(signer: &CardSigner, validity: CertValidity) -> Result<Certificate, String> {
    let spki = signer_spki(signer)?;
    let subject = Name::from_str("CN=customs179 simulated card,O=customs179 simulator,C=CN")
        .map_err(|e| format!("subject name: {e}"))?;
    let builder = CertificateBuilder::new(CardProfile { subject }, random_serial()?, validity.x509()?, spki)
        .map_err(|e| e.to_string())?;
    match signer {
        CardSigner::Sm2(key) => {
            let mut builder = builder;
            // Signed by hand: the sm2 crate's signature type puts raw r‖s into the BIT
            // STRING, while X.509 tools expect the DER SEQUENCE of r and s.
            let tbs = builder.finalize(key.as_ref()).map_err(|e| e.to_string())?;
            let signature = key.try_sign_with_rng(&mut SysRng, &tbs).map_err(|e| e.to_string())?;
            let bits = signature.to_der().to_bitstring().map_err(|e| e.to_string())?;
            builder.assemble(bits, key.as_ref()).map_err(|e| e.to_string())
        }
        CardSigner::Rsa(key) => {
            builder.build::<_, rsa::pkcs1v15::Signature>(key.as_ref()).map_err(|e| e.to_string())
        }
    }
}

/// Eight random bytes, the first in 0x01..=0x7f: DER then stores exactly eight bytes (no
/// sign byte, no stripped leading zero), so the certNo has the 16 digits of real cards.
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("random serial: {e}"))?;
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::new(&bytes).map_err(|e| format!("serial: {e}"))
}

/// Unix seconds now.
fn now_secs() -> Result<i64, String> {
    let now =
        SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| "the clock is before 1970".to_owned())?;
    i64::try_from(now.as_secs()).map_err(|_| "the clock is past 2262".to_owned())
}

/// When a card's certificate is valid: from `not_before` to `not_after`, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    pub not_before: i64,
    pub not_after: i64,
}

impl CertValidity {
    /// From now (to the second) for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Result<CertValidity, String> {
        let now = now_secs()?;
        let lifetime = i64::try_from(lifetime.as_secs()).map_err(|_| "a lifetime too long".to_owned())?;
        Ok(CertValidity { not_before: now, not_after: now.saturating_add(lifetime) })
    }

    /// Ending `days` whole days from now (before now when negative, an expired
    /// certificate), having begun a year before that or now, whichever is earlier.
    pub fn ending_in_days(days: i64) -> Result<CertValidity, String> {
        const DAY: i64 = 86_400;
        let now = now_secs()?;
        let not_after = now.saturating_add(days.saturating_mul(DAY));
        Ok(CertValidity { not_before: now.min(not_after.saturating_sub(365 * DAY)), not_after })
    }

    fn x509(self) -> Result<Validity, String> {
        let time = |at: i64| {
            let at = u64::try_from(at).map_err(|_| format!("a validity time before 1970: {at}"))?;
            DateTime::from_unix_duration(Duration::from_secs(at))
                .map(Time::from)
                .map_err(|e| format!("validity time: {e}"))
        };
        if self.not_before > self.not_after {
            return Err(format!("notBefore ({}) is after notAfter ({})", self.not_before, self.not_after));
        }
        Ok(Validity::new(time(self.not_before)?, time(self.not_after)?))
    }
}

struct CardProfile {
    subject: Name,
}

impl BuilderProfile for CardProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> builder::Result<Vec<Extension>> {
        let mut extensions = Vec::new();
        let usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        extensions.push((&usage).to_extension(tbs.subject(), &extensions)?);
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        extensions.push((&ski).to_extension(tbs.subject(), &extensions)?);
        Ok(extensions)
    }
}

fn unix_seconds(time: Time) -> i64 {
    // X.509 times end in year 9999, far below i64::MAX seconds.
    i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.into(), source })
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), KeyError> {
    use std::io::Write as _;
    let io = |source| KeyError::Io { path: path.into(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use customs179_core::SignatureVerifier;

    #[test]
    fn generated_cards_sign_like_real_ones() {
        for (algo, length) in [(Algo::Sm2, 88), (Algo::Rsa, 172)] {
            let keys = CardKeys::generate(algo).expect("card");
            assert_eq!(keys.algo(), algo);
            assert_eq!(keys.cert_no().as_str().len(), 16, "{algo}: {}", keys.cert_no());
            assert!(
                keys.cert_no().as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            let (from, to) = keys.validity();
            assert!(to - from >= 10 * 365 * 24 * 3600, "{algo}: ten years");
            let message = "\"sessionID\":\"签名\"||".as_bytes();
            let signature = keys.sign(message).expect("signs");
            assert_eq!(signature.len(), length, "{algo}");
            let verifier = SignatureVerifier::from_bytes(keys.cert_base64().as_bytes()).expect("cert loads");
            assert_eq!(verifier.cert_no(), Some(keys.cert_no()));
            assert_eq!(verifier.validity(), Some(keys.validity()));
            verifier.verify(message, &signature).expect("verifies");
            assert!(verifier.verify(b"other", &signature).is_err());
        }
    }

    #[test]
    fn algo_names_round_trip() {
        for algo in [Algo::Sm2, Algo::Rsa] {
            assert_eq!(algo.to_string().parse::<Algo>().expect("parses"), algo);
        }
        assert!(matches!("ecdsa".parse::<Algo>(), Err(KeyError::UnknownAlgo(_))));
    }
}
