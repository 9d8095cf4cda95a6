//! `customs179 presign`: the exact bytes the card must sign for a record.

use std::io::Write;

use customs179_core::{PaymentRecord, PreSign, RecordRules};

use super::{Failure, read_text};

/// Writes the exact pre-sign bytes of a payment record to stdout (no trailing newline).
///
/// The record is `{"payExchangeInfoHead":{…},"payExchangeInfoLists":[…]}` with
/// guid and ebpCode. Invalid input exits 2 with every problem and its JSON
/// Pointer on stderr.
#[derive(clap::Args)]
pub struct Args {
    /// The sessionID of the customs request this upload answers.
    #[arg(long)]
    session_id: String,
    /// The platform's serviceTime of the upload, epoch milliseconds.
    #[arg(long)]
    service_time: u64,
    /// The payment record JSON file; `-` or nothing reads standard input.
    file: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let text = read_text(args.file.as_deref())?;
    let record = PaymentRecord::parse(&text, RecordRules::COMPLETE).map_err(|problems| {
        let lines: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        Failure::BadInput(format!("invalid payment record:\n{}", lines.join("\n")))
    })?;
    let presign = PreSign::build(&record, &args.session_id, args.service_time)
        .map_err(|e| Failure::BadInput(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(presign.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::BadInput(format!("cannot write the pre-sign string: {e}")))
}
