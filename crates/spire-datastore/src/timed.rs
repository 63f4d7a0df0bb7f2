//! The one place datastore operations are measured: every public operation of
//! [`DataStore`](crate::DataStore) and [`WriteTx`](crate::WriteTx) runs through [`timed`], which
//! records its name (SPIRE's datastore method name in snake case, such as
//! `create_registration_entry`), outcome and duration with
//! [`spire_telemetry::metrics::datastore_operation`].
//!
//! A [`DataStore`](crate::DataStore) method that only runs the [`WriteTx`](crate::WriteTx)
//! operation of the same name in its own transaction is counted once, by that operation.

use std::future::Future;
use std::time::Instant;

use crate::error::Result;

/// Runs `op` and records it as the datastore operation `name`.
pub(crate) async fn timed<T, F>(name: &'static str, op: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let result = op.await;
    spire_telemetry::metrics::datastore_operation(name, result.is_ok(), started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use spire_spiffe::SystemClock;

    use crate::DataStore;

    #[test]
    fn every_operation_is_counted_with_its_outcome_and_timed() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let ds = DataStore::open_in_memory(Arc::new(SystemClock))
                    .await
                    .unwrap();
                ds.create_join_token("t1", i64::MAX).await.unwrap();
                ds.create_join_token("t2", i64::MAX).await.unwrap();
                ds.consume_join_token("t1", 0).await.unwrap();
                ds.delete_entry("no-such-entry").await.unwrap_err();
                // A write inside a transaction is counted too.
                let mut tx = ds.begin().await.unwrap();
                tx.consume_join_token("t2", 0).await.unwrap();
                tx.commit().await.unwrap();
            });
        });
        let text = handle.render();
        let line = |op: &str, status: &str| {
            format!("spire_datastore_operations_total{{operation=\"{op}\",status=\"{status}\"}}")
        };
        let value = |prefix: String| {
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.trim().to_owned())
        };
        assert_eq!(
            value(line("create_join_token", "ok")).as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            value(line("consume_join_token", "ok")).as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            value(line("delete_registration_entry", "error")).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(value(line("delete_registration_entry", "ok")), None);
        assert_eq!(
            value(
                "spire_datastore_operation_duration_seconds_count{operation=\"create_join_token\"}"
                    .to_owned()
            )
            .as_deref(),
            Some("2"),
            "{text}"
        );
    }
}
