//! Adapter that lets rustls read the time from a [`Clock`].

use std::fmt;
use std::sync::Arc;

use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;
use spire_spiffe::Clock;

/// A rustls [`TimeProvider`] backed by a [`Clock`]; rustls passes its time to our verifiers as
/// `now`, so certificate validity is judged at the clock's time.
pub(crate) struct ClockTime(pub(crate) Arc<dyn Clock>);

impl ClockTime {
    pub(crate) fn provider(clock: Arc<dyn Clock>) -> Arc<dyn TimeProvider> {
        Arc::new(ClockTime(clock))
    }
}

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let now = self.0.now();
        // Before the epoch there is no meaningful certificate validity: refuse.
        now.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(UnixTime::since_unix_epoch)
    }
}

impl fmt::Debug for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClockTime").field(&self.0).finish()
    }
}
