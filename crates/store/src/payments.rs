//! Payment records pushed (or pulled) from the platform.

use customs179_core::{PaymentRecord, RecordRules, write_record};
use sqlx::Row;

use crate::backend::on_db;
use crate::{Millis, Store, StoreError};

/// What a put of payment records changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PutOutcome {
    pub stored: usize,
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Nothing was stored: the records contradict what is stored (or each other).
    #[error("{}", .0.join("; "))]
    Conflict(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PutError {
    fn from(e: sqlx::Error) -> PutError {
        PutError::Store(e.into())
    }
}

/// Reads a record back from its stored form.
pub(crate) fn read_record(stored: &str) -> Result<PaymentRecord, StoreError> {
    PaymentRecord::parse(stored, RecordRules::PLATFORM)
        .map_err(|problems| StoreError::Corrupt(format!("a stored payment record: {problems}")))
}

impl Store {
    /// Stores payment records, all or nothing. A payment is identified by
    /// payCode + payTransactionId; storing one again with the same content
    /// changes nothing, with other content is a conflict, and so is an order
    /// that another payment already paid.
    pub async fn put_payments(&self, records: &[PaymentRecord], now: Millis) -> Result<PutOutcome, PutError> {
        on_db!(self, pool, d => {
            // IMMEDIATE: this transaction reads before it writes, and a deferred one that has read
            // cannot wait for the write lock: SQLite answers SQLITE_BUSY at once, busy_timeout or not.
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            // Two pushes of one payment at once: the second sees the first's, whole.
            if let Some(lock) = d.lock_writers("payments") {
                sqlx::query(sqlx::AssertSqlSafe(lock)).execute(&mut *tx).await?;
            }
            let mut outcome = PutOutcome { stored: 0, unchanged: 0 };
            let mut conflicts = Vec::new();
            for record in records {
                let (pay_code, transaction) = record.payment_key();
                let stored_form = write_record(record);
                let existing =
                    sqlx::query("SELECT id, record FROM payments WHERE pay_code = $1 AND pay_transaction_id = $2")
                        .bind(pay_code)
                        .bind(transaction)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(row) = existing {
                    let same: String = row.get(1);
                    if same == stored_form {
                        outcome.unchanged += 1;
                    } else {
                        conflicts.push(format!(
                            "payment {pay_code}/{transaction} is already stored with different content"
                        ));
                    }
                    continue;
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO payments (pay_code, pay_transaction_id, record, received_at)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(pay_code)
                .bind(transaction)
                .bind(&stored_form)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                for order_no in record.order_nos() {
                    let claimed = sqlx::query(
                        "INSERT INTO payment_orders (order_no, payment_id) VALUES ($1, $2)
                         ON CONFLICT (order_no) DO NOTHING",
                    )
                    .bind(order_no)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if !claimed {
                        let owner: (String, String) = sqlx::query_as(
                            "SELECT p.pay_code, p.pay_transaction_id FROM payment_orders po
                             JOIN payments p ON p.id = po.payment_id WHERE po.order_no = $1",
                        )
                        .bind(order_no)
                        .fetch_one(&mut *tx)
                        .await?;
                        conflicts.push(format!(
                            "order {order_no} of payment {pay_code}/{transaction} is already paid by payment {}/{}",
                            owner.0, owner.1
                        ));
                    }
                }
                outcome.stored += 1;
            }
            if !conflicts.is_empty() {
                tx.rollback().await?;
                return Err(PutError::Conflict(conflicts));
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }
}
