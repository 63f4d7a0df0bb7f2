//! Pure SPIFFE value types: SPIFFE IDs, trust domains, selectors, bundles, clock
