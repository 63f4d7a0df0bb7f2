//! Fuzzes selector parsing: never panics; whatever parses prints back unchanged; selector sets
//! stay sorted and their subset relation is consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_spiffe::{Selector, Selectors};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = s.parse::<Selector>() {
        assert_eq!(sel.to_string(), s);
        assert!(!sel.kind().is_empty() && !sel.kind().contains(':'));
        assert!(!sel.value().is_empty());
        assert_eq!(Selector::new(sel.kind(), sel.value()).as_ref(), Ok(&sel));
    }
    // Each line is a selector; build a set from all lines and one from the even lines.
    let all: Vec<Selector> = s.lines().filter_map(|l| l.parse().ok()).collect();
    let set: Selectors = all.iter().cloned().collect();
    let half: Selectors = all.iter().step_by(2).cloned().collect();
    assert!(set.as_slice().windows(2).all(|w| w[0] < w[1]));
    assert!(half.is_subset_of(&set));
    assert!(all.iter().all(|x| set.contains(x)));
});
