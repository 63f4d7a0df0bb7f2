//! Local write marks: a per-process sequence of node and bundle writes, so caches that follow
//! the change log (the server's agent check and bundle) can tell whether a write made through
//! this [`DataStore`] may not have reached them yet, and read the database instead until it has.
//!
//! Every node or bundle write marks its kind when it starts and again after it commits (or
//! fails). A cache notes [`DataStore::local_write_seq`] before it reads the change log; once it
//! has applied everything up to that read, writes with a mark at or below the noted number are
//! in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::DataStore;
use crate::types::ChangeKind;

/// Kind bits for [`WriteMarks::mark`].
pub(crate) const NODE: u8 = 1;
/// See [`NODE`].
pub(crate) const BUNDLE: u8 = 2;

/// The counters (one set per store).
#[derive(Debug, Default)]
pub(crate) struct WriteMarks {
    seq: AtomicU64,
    node: AtomicU64,
    bundle: AtomicU64,
}

impl WriteMarks {
    /// Records a write of the kinds in `kinds` (a no-op for 0).
    pub(crate) fn mark(&self, kinds: u8) {
        if kinds == 0 {
            return;
        }
        let s = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        if kinds & NODE != 0 {
            self.node.fetch_max(s, Ordering::SeqCst);
        }
        if kinds & BUNDLE != 0 {
            self.bundle.fetch_max(s, Ordering::SeqCst);
        }
    }

    /// Marks `kinds` now and again when the guard is dropped (after the write committed or
    /// failed).
    pub(crate) fn guard(self: &Arc<Self>, kinds: u8) -> MarkGuard {
        self.mark(kinds);
        MarkGuard {
            marks: Arc::clone(self),
            kinds,
        }
    }
}

/// See [`WriteMarks::guard`].
pub(crate) struct MarkGuard {
    marks: Arc<WriteMarks>,
    kinds: u8,
}

impl Drop for MarkGuard {
    fn drop(&mut self) {
        self.marks.mark(self.kinds);
    }
}

impl DataStore {
    /// The current position of this store's local write sequence (see the module docs).
    pub fn local_write_seq(&self) -> u64 {
        self.inner.marks.seq.load(Ordering::SeqCst)
    }

    /// The sequence number of the last node (or bundle) write made through this store; 0 for
    /// kinds that are not marked (entries, federation relationships).
    pub fn last_local_write(&self, kind: ChangeKind) -> u64 {
        match kind {
            ChangeKind::Node => self.inner.marks.node.load(Ordering::SeqCst),
            ChangeKind::Bundle => self.inner.marks.bundle.load(Ordering::SeqCst),
            ChangeKind::Entry | ChangeKind::Federation => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_the_kinds_written() {
        let m = WriteMarks::default();
        m.mark(NODE);
        assert_eq!(m.seq.load(Ordering::SeqCst), 1);
        assert_eq!(m.node.load(Ordering::SeqCst), 1);
        assert_eq!(m.bundle.load(Ordering::SeqCst), 0);
        m.mark(BUNDLE);
        m.mark(0);
        assert_eq!(m.seq.load(Ordering::SeqCst), 2);
        assert_eq!(m.node.load(Ordering::SeqCst), 1);
        assert_eq!(m.bundle.load(Ordering::SeqCst), 2);
        let m = Arc::new(m);
        {
            let _g = m.guard(NODE);
            assert_eq!(m.node.load(Ordering::SeqCst), 3);
        }
        assert_eq!(m.node.load(Ordering::SeqCst), 4);
    }
}
