//! The customs 179 wire formats, exact to the byte. Pure: no I/O, no async.
//!
//! - [`OpenReq`]: what customs asks for (spec 1.1).
//! - [`PaymentRecord`]: the platform's payment data, validated (spec 2).
//! - [`PreSign`] and [`UploadBody`]: the signed text and what is uploaded,
//!   built from one serialisation (spec 3).
//! - [`classify`]: what customs' answer means (spec 1.2).
//! - [`SignatureVerifier`]: SM2/SM3 and RSA/SHA-1 checks against the card's
//!   certificate (spec 3.4, 4).

pub mod amount;
pub mod answer;
pub mod form;
mod json;
pub mod open_req;
pub mod presign;
pub mod record;
pub mod secret;
pub mod signature;
pub mod time;

pub use amount::{Amount, AmountError};
pub use answer::{AnswerClass, CustomsAnswer, classify};
pub use form::{FormError, form_field};
pub use json::Pointer;
pub use open_req::{OpenReq, OpenReqError, may_be_id};
pub use presign::{BuildError, ParsedUpload, PreSign, PreSignError, UploadBody, write_record};
pub use record::{
    GoodsItem, Guid, PayHead, PayOrder, PayType, PaymentRecord, Presence, Problem, Problems, RecordRules,
    VerDept,
};
pub use secret::Secret;
pub use signature::{
    Algorithm, CertNo, CertificateInfo, KeyError, SignatureError, SignatureVerifier, days_left,
};
